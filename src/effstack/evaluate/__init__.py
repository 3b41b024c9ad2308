"""Evaluate: accuracy against labels, agreement with a reference, embedding fidelity, recall@k,
near-duplicate recall, SNR."""

from .accuracy import (
           MaxDrop,
           agreement,
           check_labels,
           cosine_similarity,
           near_duplicate_recall,
           parse_max_drop,
           recall_at_k,
           score,
           snr_db,
           top1,
)

__all__ = ["MaxDrop", "agreement", "check_labels", "cosine_similarity", "near_duplicate_recall", "parse_max_drop",
           "recall_at_k", "score", "snr_db", "top1"]
