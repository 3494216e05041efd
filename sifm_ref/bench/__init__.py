"""``sifm bench``: immunize -> transform -> edit -> judge -> report, resumable and shardable.

One package, one module per concern, each importing only the ones before it:

- :mod:`.config`: the config file as one validated model (pydantic), sweeps expanded;
- :mod:`.dataset`: the source images and their prompts (tables via :func:`isr_metric.data.read_table`,
  or Hugging Face datasets), stage ``prepare``;
- :mod:`.plan`: every unit of every stage as an artifact of :mod:`sifm_ref.artifacts`, and the
  edits to judge as manifest rows;
- :mod:`.report`: ISR per method x transform x editor, paired tests, visibility, grids, sweeps;
- :mod:`.stages`: the runner (processes, stages protect / transform / edit / judge / report).

See docs/bench.md.
"""
from .config import STAGES, BenchConfig, ConfigError, load_config
from .dataset import BenchError
from .plan import Plan, plan_bench
from .stages import run_bench

__all__ = ["run_bench", "load_config", "BenchConfig", "ConfigError", "BenchError", "Plan", "plan_bench", "STAGES"]
