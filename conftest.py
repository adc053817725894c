"""Repository-level pytest settings: executed result notebooks are artefacts, not tests."""
collect_ignore_glob = ["book/results/*", "book/experiments/runs/*", "_build/*", ".venv/*"]
