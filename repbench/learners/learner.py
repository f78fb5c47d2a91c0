"""The learner contract and the learner registry.

A learner follows the scikit-learn contract: the constructor only stores and checks options, `fit` trains and
returns self. `represent(x, kind)` maps uint8 images [N, C, H, W] to float representations [N, d]. What the
harness uses of every learner is declared on `Learner` with defaults; optional abilities (a posterior, a
likelihood, a generator of images, the use of labels) are declared in `abilities` and checked against small
protocols, never guessed. Learners are found by name in one registry that the entry-point group
`repbench.learners` also feeds, so another package can add one.
"""
from __future__ import annotations

import abc
import inspect
import warnings
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch

from ..config import TRAIN_PRESETS, check_preset
from ..registry import Registry, check_options
from ..errors import RepbenchError

REPRESENTATION_KINDS = ("mean", "sample", "embedding")
FIT_OPTIONS = ("checkpoint", "resume", "on_epoch", "progress", "augment", "train_y", "labelled")


# ------------------------------------------------------------------------------------------ abilities
@runtime_checkable
class Posterior(Protocol):
    """A Gaussian posterior q(z|x): `posterior(x) -> (mean, std)`, each [B, Z]; represent kinds include
    `sample` and `embedding`."""
    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...


@runtime_checkable
class Likelihood(Posterior, Protocol):
    """A likelihood over the 256 levels: `elbo_terms(x, z=None) -> {nll_nats: [B], kl_nats: [B]}` in nats."""
    def elbo_terms(self, x: torch.Tensor, z: torch.Tensor | None = None) -> dict[str, torch.Tensor]: ...


@runtime_checkable
class ImageGenerator(Protocol):
    """Draws images: `sample(n, generator)` from the prior and `reconstruct(x, generator)`, uint8 [n, C, H, W]."""
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor: ...

    def reconstruct(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor: ...


@runtime_checkable
class LabelUser(Protocol):
    """A semi-supervised learner: `label_budget` says how many labelled images it asks for; `fit` also takes
    `train_y` (int labels) and `labelled` (indices of the images whose labels it may use: a class-balanced
    subset chosen by the run's seed). Unsupervised learners never receive labels."""
    label_budget: int

    def fit(self, train_x: torch.Tensor, test_x: torch.Tensor | None = None, *, train_y=None, labelled=None,
            **fit_options) -> "Learner": ...


@runtime_checkable
class Classifier(Protocol):
    """Predicts labels itself: `predict_proba(x) -> [N, classes]` class probabilities of uint8 images."""
    def predict_proba(self, x: torch.Tensor) -> torch.Tensor: ...


ABILITIES: dict[str, type] = {"posterior": Posterior, "likelihood": Likelihood, "generator": ImageGenerator,
                              "labels": LabelUser, "classifier": Classifier}
_METHODS = {"posterior": ("posterior",), "likelihood": ("posterior", "elbo_terms"),
            "generator": ("sample", "reconstruct"), "labels": ("fit",), "classifier": ("predict_proba",)}


def has_ability(learner, ability: str) -> bool:
    """Whether a learner declares an ability (declared, not guessed: see `Learner.abilities`)."""
    return ability in getattr(learner, "abilities", ())


def ability_problems(cls) -> list[str]:
    """What a learner class lacks of the abilities it declares (empty when it keeps its word)."""
    problems = [f"unknown ability '{a}' (known: {', '.join(ABILITIES)})" for a in cls.abilities
                if a not in ABILITIES]
    for ability in (a for a in cls.abilities if a in ABILITIES):
        missing = [m for m in _METHODS[ability] if not callable(getattr(cls, m, None))]
        if missing:
            problems.append(f"declares '{ability}' but has no {', '.join(missing)}")
    if "labels" in cls.abilities and not {"train_y", "labelled"} <= set(inspect.signature(cls.fit).parameters):
        problems.append("declares 'labels' but its fit takes no train_y / labelled")
    if "labels" in cls.abilities and not hasattr(cls, "label_budget"):
        problems.append("declares 'labels' but has no label_budget")
    if "posterior" in cls.abilities and not {"sample", "embedding"} <= set(cls.kinds):
        problems.append("declares 'posterior' but its kinds lack 'sample' / 'embedding'")
    return problems


def _check_learner_class(name: str, cls) -> None:
    """Run when a learner is registered: a plugin whose entry-point name differs from its class's `name`
    would train but could never be reloaded, and a declared ability must exist."""
    if not (isinstance(cls, type) and issubclass(cls, Learner)):
        raise RepbenchError(f"learner '{name}' is {cls!r}, not a subclass of repbench.Learner")
    if cls.name != name:
        raise RepbenchError(f"learner '{name}' is registered under another name than its class's name "
                            f"'{cls.name}'; make the entry-point name equal {cls.__name__}.name")
    problems = ability_problems(cls)
    if problems:
        raise RepbenchError(f"learner '{name}': {'; '.join(problems)}")


def register_from_source(registry: Registry) -> None:
    """The built-in learners of a source tree that was not installed (PYTHONPATH=.): the entry points that
    pyproject.toml names, with the tree's models/ imported as `repbench_models`."""
    import importlib
    import importlib.util
    import sys
    root = Path(__file__).resolve().parents[2]  # repbench/learners/learner.py -> the tree's root
    if not (root / "pyproject.toml").exists() or not (root / "models" / "__init__.py").exists():
        return
    try:
        import tomllib
    except ImportError:
        warnings.warn("repbench is not installed and Python < 3.11 cannot read pyproject.toml: no learners; "
                      "pip install -e . or use Python >= 3.11", stacklevel=3)
        return
    if importlib.util.find_spec("repbench_models") is None:
        spec = importlib.util.spec_from_file_location("repbench_models", root / "models" / "__init__.py",
                                                      submodule_search_locations=[str(root / "models")])
        sys.modules["repbench_models"] = module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    table = tomllib.loads((root / "pyproject.toml").read_text())["project"]["entry-points"][registry.group]
    for name, target in table.items():
        module_name, attr = target.split(":")
        registry.register(name, getattr(importlib.import_module(module_name), attr), origin="repbench (source tree)")


LEARNERS: Registry[type["Learner"]] = Registry("learner", entry_point_group="repbench.learners",
                                              check=_check_learner_class, without_install=register_from_source)


# ------------------------------------------------------------------------------------------ the contract
class Learner(abc.ABC):
    """What the harness needs of any representation learner.

    Subclasses set `name`, the representation `kinds` they give, the `abilities` they have, and implement
    `fit`, `represent`, `save` and `load`. Options are keyword arguments; a learner without config dataclasses
    lists them with their defaults in `option_defaults`. `fit` receives the harness's keywords (FIT_OPTIONS:
    checkpoint, resume, on_epoch, progress, augment; train_y and labelled only for the 'labels' ability) and
    may ignore those it has no use for."""
    name: ClassVar[str] = "?"
    kinds: ClassVar[tuple[str, ...]] = ("mean",)     # representation kinds this learner gives
    abilities: ClassVar[tuple[str, ...]] = ()        # among ABILITIES
    option_defaults: ClassVar[dict[str, Any]] = {}
    # The version of the model code: raise it when the same options would train a different model, so that runs
    # made by the old code are neither resumed nor reused (it is part of the configuration key from 2 on).
    model_version: ClassVar[int] = 1

    def __init__(self, preset: str = "quick", image_shape: tuple[int, int, int] = (1, 28, 28), seed: int = 0,
                 device: str | torch.device = "cpu", **options):
        self.preset = check_preset(preset)
        self.image_shape = tuple(int(s) for s in image_shape)
        self.seed = int(seed)
        self.device = torch.device(device)
        check_options("learner", self.name, options, self.option_names())
        self.options = dict(options)
        self.history: list[dict] = []

    def option_names(self) -> list[str]:
        return list(self.option_defaults)

    @property
    def display_name(self) -> str:
        """How tables and run names show this learner (lpvae says its horizon: lpvae-h2)."""
        return self.name

    def data_limits(self) -> tuple[int | None, int | None]:
        """(train, test) images of the dataset's fixed split to use; by default the preset's."""
        cfg = TRAIN_PRESETS[self.preset]
        return cfg.train_limit, cfg.test_limit

    def params(self) -> dict[str, Any]:
        """Everything that defines this learner, for tracking and for rebuilding it."""
        return {"learner": self.name, "preset": self.preset, "image_shape": list(self.image_shape),
                "seed": self.seed, "options": dict(self.options), "model_version": self.model_version}

    def key_settings(self) -> dict[str, Any]:
        """The resolved settings that determine the trained state (hashed into a run's configuration key)."""
        return {**self.option_defaults, **self.options}

    def state_bytes(self) -> bytes | None:
        """The trained state as bytes, for keying cached representations when no checkpoint file exists."""
        return None

    def check_kind(self, kind: str) -> None:
        if kind not in self.kinds:
            raise RepbenchError(f"learner '{self.name}' gives representation kinds {', '.join(self.kinds)}; "
                                f"'{kind}' is not one of them")

    @abc.abstractmethod
    def fit(self, train_x: torch.Tensor, test_x: torch.Tensor | None = None, **fit_options) -> "Learner": ...

    @abc.abstractmethod
    def represent(self, x: torch.Tensor, kind: str = "mean") -> torch.Tensor: ...

    @abc.abstractmethod
    def save(self, path: str | Path) -> None: ...

    @abc.abstractmethod
    def load(self, path: str | Path) -> "Learner": ...


def create_learner(name: str, **options) -> Learner:
    """Build a registered learner by name: `create_learner("lpvae", h=2, preset="quick", image_shape=(1, 28, 28))`."""
    return LEARNERS.get(name)(**options)


def list_learners(pattern: str = "*") -> list[str]:
    return LEARNERS.names(pattern)


def learner_from_params(params: dict, device: str | torch.device = "cpu") -> Learner:
    """An untrained learner rebuilt from `Learner.params()` (as a run records them)."""
    return create_learner(params.get("learner", "?"), preset=params.get("preset", "quick"),
                          image_shape=tuple(params.get("image_shape", (1, 28, 28))), seed=params.get("seed", 0),
                          device=device, **params.get("options", {}))


def load_learner(path: str | Path, device: str | torch.device = "cpu") -> Learner:
    """Rebuild a learner from a repbench checkpoint (its name and options are stored inside)."""
    from .train import load_checkpoint
    state = load_checkpoint(path)
    return learner_from_params({"learner": state.get("learner", "?"), **state.get("init", {})}, device).load(path)

