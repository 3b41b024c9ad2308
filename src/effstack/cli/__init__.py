"""The ``effstack`` command line: thin subcommands that call the library."""
