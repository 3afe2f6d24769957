"""The research CLIs' shared layer: flag parsing helpers (:mod:`.args`), typed configurations
(:mod:`.config`: one frozen dataclass per CLI, built once from the parsed flags), the flag groups
several CLIs share (:mod:`.groups`: model shape, voxel, device/precision, evaluator sampling) and
the edge checks every CLI runs before work starts (:mod:`.edge`).

It sits above the store, token and backends layers (the flag groups name their options) and below
the programs (preprocess, train, analysis) that parse flags with it."""
