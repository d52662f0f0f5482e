"""The seeded mutation fuzzer of tests/test_fuzz.py: valid tiny fixtures of every reader (`fixtures`), ways to
damage them (`mutate` for bytes, JSON, TOML, numpy and safetensors; `mutate_media` for signal formats), and a
runner that calls the CLI in-process under a time limit and judges the outcome (`harness`)."""
