"""``effstack index build BUNDLE --ray``: Ray Data actors embed the images; the index holds the same vectors
as a build without Ray, and an unreadable image is skipped with a warning in both."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("ray.data")
pytest.importorskip("faiss")
pytest.importorskip("onnxruntime")

from effstack.cli.main import main
from effstack.search import Index

from ..search.helpers import write_photos

pytestmark = pytest.mark.timeout(180)


def test_index_build_with_ray_matches_the_build_without(cnn_bundle, tmp_path, capsys):
    photos = tmp_path / "photos"
    write_photos(photos, 6)
    (photos / "broken.png").write_bytes(b"not an image")
    plain, spread = tmp_path / "plain", tmp_path / "spread"
    base = ["index", "build", str(cnn_bundle), "--images", str(photos), "--threads", "2", "--batch", "2"]
    assert main([*base, "--out", str(plain)]) == 0
    assert main([*base, "--out", str(spread), "--ray", "--actors", "2"]) == 0
    out = capsys.readouterr()
    assert "embedding on 2 Ray actor(s) of 1 CPU(s)" in out.out
    assert "skipped" in out.err and "broken.png" in out.err
    a, b = Index.open(plain), Index.open(spread)
    assert sorted(a.ids) == sorted(b.ids) and len(b) == 6
    assert a.model["fingerprint"] == b.model["fingerprint"]
    for image_id in a.ids:
        np.testing.assert_allclose(a.vector(image_id), b.vector(image_id), rtol=1e-4, atol=1e-5)
