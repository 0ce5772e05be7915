"""Generates the Triton model repository of the two-stage recommender from a run bundle.

One call (:func:`build_repository` on a bundle that training's ``bundle`` stage wrote,
see :mod:`recsys.bundle.layout`; CLI ``python -m recsys.serving.cli build-repo``)
copies the bundle's models, index and tables and renders the configs; no torch model
is rebuilt and no ``configs/`` file is read. It writes::

    <repository>/
      user_tower/config.pbtxt   1/model.onnx        platform onnxruntime_onnx
      ranker/config.pbtxt       1/model.onnx        platform onnxruntime_onnx
      retrieval/config.pbtxt    1/model.py          python backend + FAISS
                                1/index.faiss, item_ids.npy, config.json, metadata.json
      recommend/config.pbtxt    1/model.py          python backend (BLS entry point)
                                1/tables.npz, tables.json          users, items, settings
                                1/ranker_features.npz, .json       ranker inputs
                                1/export_manifest.json             ONNX export manifest
                                1/feature_schema.json              schema profiles are read with
                                1/bundle.json                      the bundle's id and provenance
                                1/user_tower.onnx, 1/index/        inline retrieval only

With ``RepositoryConfig.retrieval_mode="inline"`` the ``recommend`` instances run the
user tower and the FAISS search in their own process
(:mod:`recsys.runtime.inline_stages`) from copies in their version folder, instead of
calling ``user_tower`` and ``retrieval`` through BLS; both models stay in the repository
for clients that call them directly.

``recommend`` reads the users' real-time profiles when its config parameter
``profile_store`` names a store (``RepositoryConfig.profile_store``); the tables carry the
mappings from a profile's raw values to the models' ids (``ProfileEncoding``).

Every model has dynamic batching (a short ``max_queue_delay_microseconds``), a version
folder and ``version_policy: latest 1``. The stage models have NO ``instance_group``:
Triton then puts one instance on each GPU when there is one and CPU instances
otherwise, so the same repository serves on this CPU machine (``LocalTritonServer``)
and in NVIDIA's container. ``recommend`` asks for ``KIND_CPU`` instances
(``RepositoryConfig.recommend_instances``, default 2): its Python is CPU work on
either machine, and a second instance computes while the first waits on its stage
calls. The configs come from the templates in ``recsys/serving/triton_models/<name>/``.

New versions roll in with the model-control API (:func:`add_model_version` +
:func:`roll_in`): copy the new version folder next to the old one, then
``load_model``; Triton loads the new version, moves traffic to it and unloads the old
one, while requests keep being served.

Example::

    info = build_repository("artifacts/ml-100k/bundle", "artifacts/triton_repo")
    info.root / "recommend" / "1" / "tables.npz"
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recsys.bundle import layout
from recsys.bundle.layout import RunBundle
from recsys.export.manifest import ExportManifest, TensorSpec
from recsys.runtime.engine import META_FILE, served_max_k
from recsys.runtime.inline_stages import INDEX_DIR, RETRIEVAL_MODES, USER_TOWER_FILE
from recsys.runtime.policies import parse_policy
from recsys.runtime.user_state import SCHEMA_FILE, parse_store_url

LOGGER = logging.getLogger(__name__)

TEMPLATES_DIR = Path(__file__).resolve().parent / "triton_models"
"""Config templates and python-backend ``model.py`` files (package data,
``recsys/serving/triton_models/<name>/``), so that an installed package builds
repositories as a source checkout does."""

MODEL_NAMES: tuple[str, ...] = ("user_tower", "retrieval", "ranker", "recommend")
"""The models of the generated repository, in the order they depend on each other."""

EXPORT_MANIFEST_FILE = "export_manifest.json"
BUNDLE_INFO_FILE = "bundle.json"
"""In ``recommend/<v>/``: the id, summary and provenance of the bundle it was built from."""


GPU_ACCELERATORS = {
    "cuda": "",
    "tensorrt": """optimization {
  execution_accelerators {
    gpu_execution_accelerator: [ {
      name: "tensorrt"
      parameters { key: "precision_mode" value: "FP32" }
      parameters { key: "max_workspace_size_bytes" value: "1073741824" }
    } ]
  }
}""",
}
"""The ``optimization`` block of the ONNX models per ``RepositoryConfig.gpu_accelerator``."""


@dataclass(frozen=True)
class RepositoryConfig:
    """How the repository is generated.

    Args:
        max_batch_size: ``max_batch_size`` of ``recommend``, ``user_tower`` and
            ``retrieval`` (requests the dynamic batcher may merge).
        ranker_max_batch_size: rows of one ranker call; ``recommend`` splits its
            (user, candidate) pairs into calls of at most this many (a ranker that
            scores candidate lists: into calls of at most this many over
            ``num_candidates`` lists, its ``max_batch_size``).
        max_queue_delay_us: ``max_queue_delay_microseconds`` of every model's dynamic
            batcher: how long a request may wait for others to join its batch.
        intra_op_threads: onnxruntime ``intra_op_thread_count`` of the ONNX models.
        faiss_threads: OpenMP threads of FAISS in each retrieval instance.
        max_k: the largest ``k`` a ``recommend`` request may ask for; None: the
            retrieval depth N (every request then costs the same); never more than
            the catalogue size.
        version: the version folder to write (1 for a new repository).
        profile_store: the real-time profile store ``recommend`` reads users from
            (``redis://host:port/db[?prefix=P]`` or ``sqlite:///path``); empty: off,
            the training tables alone answer.
        gpu_accelerator: execution provider of the ONNX models on GPU instances in
            NVIDIA's onnxruntime backend: ``tensorrt`` (TensorRT EP, FP32, CUDA EP for
            what TensorRT does not take) or ``cuda`` (CUDA EP alone, the backend's
            default on GPU instances). CPU instances ignore it.
        exposure_log: the event store every served list is written to as an exposure
            event (same URL forms as ``profile_store``, usually the same store); empty:
            off. Writes are asynchronous; a full buffer drops and counts.
        exposure_buffer: exposures each ``recommend`` instance buffers before dropping.
        targeting_rules: a targeting rules YAML file (``recsys.targeting``) ``recommend``
            applies; checked against the bundle's catalogue when the repository is
            built, and reloaded by the running server when it changes (a file that
            fails to load keeps the previous rules). Empty: no rules.
        rules_check_s: seconds between the server's checks of the rules file.
        policy: the slate policy (``deterministic``, ``epsilon_greedy:EPS``,
            ``plackett_luce:T``; :mod:`recsys.runtime.policies`); the exposure log
            records each slate's exact propensities.
        policy_depth: how many ranked candidates a stochastic policy draws from.
        experiments: an A/B tests YAML file (:mod:`recsys.experiments`): each request's
            assigned arm may set its slate policy, and exposures record the arms.
            Checked when the repository is built. Empty: none.
        bandit_state: a policy bandit's state file (:mod:`recsys.bandits.serving`; arms
            are slate policy ids) that picks the policy of requests no experiment arm
            decides; re-read by the server when it changes. Empty: none.
        bandit_name: the bandit's name in the exposure log (``<name>@<version>``).
        ranker_bundles: further run bundles whose rankers become versions
            ``version + 1, version + 2, ...`` of ``ranker`` (same inputs and ranker
            features as the main bundle's); experiment arms route requests to them
            with ``model: ranker:<version>``. The ranker then keeps every version
            loaded (``version_policy: all``) and ``recommend`` names its default
            version in each call.
        cold_items: a store URL (``sqlite:///path`` or ``redis://...``) whose catalogue
            ``recommend`` reads items published after training from
            (:mod:`recsys.runtime.cold_items`); the item tower and the encoding spec
            are copied next to its tables. Empty: the trained catalogue only.
        cold_items_poll_s: seconds between two reads of that catalogue.
        cold_items_max: cold items served at most.
        cold_items_per_poll: catalogue records read per poll at most.
        recommend_instances: CPU instances of the ``recommend`` entry point. Its
            Python runs the request logic and waits on the stage models, so a second
            instance works while the first waits (each holds its own copy of the
            tables); 0 leaves ``instance_group`` out (Triton's default, one).
        retrieval_mode: how ``recommend`` runs the user tower and the retrieval search:
            ``models`` (BLS calls to the ``user_tower`` and ``retrieval`` models, which
            run on the GPU when there is one) or ``inline`` (onnxruntime and FAISS on the
            CPU inside each ``recommend`` instance, from copies in its version folder:
            no BLS round trip for either stage, each instance holding its own index;
            the faster choice on a CPU server, measured in docs/serving.md).

    Example:
        >>> RepositoryConfig(max_queue_delay_us=300).max_batch_size
        64
    """

    max_batch_size: int = 64
    ranker_max_batch_size: int = 16_384
    max_queue_delay_us: int = 100
    intra_op_threads: int = 1
    faiss_threads: int = 1
    max_k: int | None = None
    version: int = 1
    profile_store: str = ""
    gpu_accelerator: str = "tensorrt"
    recommend_instances: int = 2
    exposure_log: str = ""
    exposure_buffer: int = 10_000
    targeting_rules: str = ""
    rules_check_s: float = 1.0
    policy: str = "deterministic"
    policy_depth: int = 50
    experiments: str = ""
    bandit_state: str = ""
    bandit_name: str = "policy"
    ranker_bundles: tuple[str, ...] = ()
    cold_items: str = ""
    cold_items_poll_s: float = 2.0
    cold_items_max: int = 1000
    cold_items_per_poll: int = 200
    retrieval_mode: str = "models"

    def __post_init__(self) -> None:
        if self.retrieval_mode not in RETRIEVAL_MODES:
            raise ValueError(
                f"retrieval_mode must be one of {list(RETRIEVAL_MODES)}, "
                f"got {self.retrieval_mode!r}"
            )
        if self.cold_items:
            parse_store_url(self.cold_items)
            if '"' in self.cold_items or "\\" in self.cold_items:
                raise ValueError("cold_items must not hold quotes or backslashes")
        if not self.cold_items_poll_s > 0 or min(self.cold_items_max, self.cold_items_per_poll) < 1:
            raise ValueError(
                "cold_items_poll_s must be > 0, cold_items_max and cold_items_per_poll >= 1"
            )
        if self.gpu_accelerator not in GPU_ACCELERATORS:
            raise ValueError(
                f"gpu_accelerator must be one of {sorted(GPU_ACCELERATORS)}, "
                f"got {self.gpu_accelerator!r}"
            )
        for name in ("max_batch_size", "ranker_max_batch_size", "intra_op_threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.recommend_instances < 0:
            raise ValueError(f"recommend_instances must be >= 0, got {self.recommend_instances}")
        if self.max_k is not None and self.max_k < 1:
            raise ValueError(f"max_k must be >= 1, got {self.max_k}")
        for name in ("faiss_threads", "version"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_queue_delay_us < 0:
            raise ValueError("max_queue_delay_us must be >= 0")
        for name in ("profile_store", "exposure_log"):
            url = getattr(self, name)
            if url:
                parse_store_url(url)  # refuses other schemes now, not at load
            if '"' in url or "\\" in url:
                raise ValueError(f"{name} must not hold quotes or backslashes")
        if self.exposure_buffer < 1:
            raise ValueError(f"exposure_buffer must be >= 1, got {self.exposure_buffer}")
        if '"' in self.targeting_rules or "\\" in self.targeting_rules:
            raise ValueError("targeting_rules must not hold quotes or backslashes")
        parse_policy(self.policy, self.policy_depth)  # refuses a bad policy now
        if not re.fullmatch(r"[a-z][a-z0-9_]{0,63}", self.bandit_name):
            raise ValueError(f"bandit_name must match [a-z][a-z0-9_]*, got {self.bandit_name!r}")
        if '"' in self.bandit_state or "\\" in self.bandit_state:
            raise ValueError("bandit_state must not hold quotes or backslashes")
        if '"' in self.experiments or "\\" in self.experiments:
            raise ValueError("experiments must not hold quotes or backslashes")
        if not self.rules_check_s > 0:
            raise ValueError(f"rules_check_s must be > 0, got {self.rules_check_s}")


@dataclass
class RepositoryInfo:
    """What :func:`build_repository` wrote.

    Attributes:
        root: the repository folder.
        version: the version folder written for every model.
        manifest: the ONNX export manifest (user tower and ranker).
        files: per model, the files of its version folder.
        config: the generation settings.
        bundle: the run bundle it was built from.
    """

    root: Path
    version: int
    manifest: ExportManifest
    files: dict[str, list[Path]] = field(default_factory=dict)
    config: RepositoryConfig = field(default_factory=RepositoryConfig)
    bundle: RunBundle | None = None

    def model_dir(self, name: str) -> Path:
        return self.root / name


# -- config templates ----------------------------------------------------------------


def _triton_type(spec: TensorSpec) -> str:
    return spec.triton_dtype


def tensor_block(kind: str, specs: Sequence[TensorSpec]) -> str:
    """A config.pbtxt ``input [...]`` / ``output [...]`` block for batched tensors.

    Args:
        kind: ``"input"`` or ``"output"``.
        specs: tensors with the batch axis first (``-1``), as the manifest records them.

    Example:
        >>> print(tensor_block("input", [TensorSpec("ids", "int64", (-1, 2, 3))]))
        input [
          { name: "ids" data_type: TYPE_INT64 dims: [ 2, 3 ] }
        ]
    """
    entries = []
    for spec in specs:
        if not spec.shape or spec.shape[0] != -1:
            raise ValueError(f"{kind} {spec.name!r}: the first axis must be the batch (-1)")
        dims = ", ".join(str(d) for d in spec.shape[1:])
        # A graph tensor of shape [B] is [B, 1] to Triton: dims [1], reshaped to [].
        shape = f"dims: [ {dims} ]" if dims else "dims: [ 1 ] reshape: { shape: [ ] }"
        entries.append(f'  {{ name: "{spec.name}" data_type: {_triton_type(spec)} {shape} }}')
    return f"{kind} [\n" + ",\n".join(entries) + "\n]"


def render_config(name: str, values: Mapping[str, Any], templates: Path = TEMPLATES_DIR) -> str:
    """The ``config.pbtxt`` of model template ``name`` with ``${...}`` fields filled.

    Raises:
        KeyError: the template uses a field ``values`` lacks.
    """
    template = string.Template((templates / name / "config.pbtxt").read_text())
    return template.substitute({k: str(v) for k, v in values.items()})


def _copy_model_file(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir():  # external data: a folder named model.onnx
        shutil.copytree(src, dst)
    else:
        shutil.copy2(src, dst)


def _write_config(root: Path, name: str, values: Mapping[str, Any]) -> Path:
    path = root / name / "config.pbtxt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_config(name, {"name": name, **values}))
    return path


def _copy_python_model(root: Path, name: str, version: int) -> Path:
    dst = root / name / str(version) / "model.py"
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(TEMPLATES_DIR / name / "model.py", dst)
    return dst


# -- the repository ------------------------------------------------------------------


def build_repository(
    bundle: RunBundle | str | Path,
    out_dir: str | Path,
    config: RepositoryConfig | None = None,
    *,
    overwrite: bool = False,
) -> RepositoryInfo:
    """Writes the whole repository (every model at ``config.version``) from a run bundle.

    Nothing is computed here: the models, the index and the tables come from the
    bundle (:mod:`recsys.bundle.layout`), checked before anything is written; the
    configs are rendered from the package's templates.

    Args:
        bundle: a :class:`~recsys.bundle.layout.RunBundle` or its folder.
        out_dir: the repository folder.
        config: generation settings.
        overwrite: replace an existing repository folder.

    Returns:
        A :class:`RepositoryInfo`.

    Raises:
        BundleError: the bundle is missing, incomplete, changed or of another format.
        FileExistsError: ``out_dir`` exists and is not empty, without ``overwrite``.
    """
    cfg = config or RepositoryConfig()
    run = (
        bundle
        if isinstance(bundle, RunBundle)
        else RunBundle.open(bundle, required=layout.SERVING_FILES)
    )
    root = Path(out_dir)
    if root.exists() and any(root.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{root} exists and is not empty (pass overwrite=True)")
        foreign = sorted(p.name for p in root.iterdir() if p.name not in MODEL_NAMES)
        if foreign:
            # overwrite replaces a repository, never an arbitrary folder
            raise FileExistsError(
                f"{root} holds {foreign[:5]}, which are not models of this repository; "
                "refusing to delete it"
            )
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    v = cfg.version
    files: dict[str, list[Path]] = {}
    manifest = ExportManifest.load(run.path(layout.EXPORT_MANIFEST))
    for name in ("user_tower", "ranker"):
        target = root / name / str(v) / "model.onnx"
        _copy_model_file(run.path(layout.model_path(name)), target)
        files[name] = [target]
    user_entry, ranker_entry = manifest["user_tower"], manifest["ranker"]
    ranker_versions = _add_ranker_bundles(run, manifest, cfg.ranker_bundles, root, v)
    for number in ranker_versions:
        files["ranker"].append(root / "ranker" / str(number) / "model.onnx")
    summary = run.summary
    # the ranker's batch axis: pairs, or candidate lists for a ranker that scores lists
    ranker_batch = cfg.ranker_max_batch_size
    if ranker_entry.list_ids_input is not None:
        ranker_batch = max(1, cfg.ranker_max_batch_size // int(summary["num_candidates"]))

    common = {"max_queue_delay_us": cfg.max_queue_delay_us}
    onnx_common = {
        **common,
        "intra_op_threads": cfg.intra_op_threads,
        "optimization": GPU_ACCELERATORS[cfg.gpu_accelerator],
    }
    _write_config(
        root,
        "user_tower",
        {
            **onnx_common,
            "max_batch_size": cfg.max_batch_size,
            "inputs": tensor_block("input", user_entry.inputs),
            "outputs": tensor_block("output", user_entry.outputs),
        },
    )
    _write_config(
        root,
        "ranker",
        {
            **onnx_common,
            "max_batch_size": ranker_batch,
            "inputs": tensor_block("input", ranker_entry.inputs),
            "outputs": tensor_block("output", ranker_entry.outputs),
        },
    )
    if ranker_versions:
        # arms route to named versions: every version stays loaded (not `latest 1`)
        ranker_config = root / "ranker" / "config.pbtxt"
        latest = "version_policy: { latest: { num_versions: 1 } }"
        text = ranker_config.read_text()
        assert latest in text, "the ranker template's version policy changed"
        ranker_config.write_text(text.replace(latest, "version_policy: { all: { } }"))

    retrieval_dir = root / "retrieval" / str(v)
    shutil.copytree(run.path(layout.INDEX_DIR), retrieval_dir)
    _copy_python_model(root, "retrieval", v)
    _write_config(
        root,
        "retrieval",
        {
            **common,
            "max_batch_size": cfg.max_batch_size,
            "dim": int(summary["query_dim"]),
            "faiss_threads": cfg.faiss_threads,
        },
    )
    files["retrieval"] = sorted(retrieval_dir.iterdir())

    recommend_dir = root / "recommend" / str(v)
    shutil.copytree(run.path(layout.RUNTIME_DIR), recommend_dir)
    shutil.copy2(run.path(layout.SCHEMA), recommend_dir / SCHEMA_FILE)
    shutil.copy2(run.path(layout.EXPORT_MANIFEST), recommend_dir / EXPORT_MANIFEST_FILE)
    if cfg.retrieval_mode == "inline":
        # the user tower and the index of the same bundle as the tables beside them
        shutil.copy2(run.path(layout.model_path("user_tower")), recommend_dir / USER_TOWER_FILE)
        shutil.copytree(run.path(layout.INDEX_DIR), recommend_dir / INDEX_DIR)
    (recommend_dir / BUNDLE_INFO_FILE).write_text(
        json.dumps(
            {"bundle_id": run.bundle_id, "summary": summary, "provenance": run.provenance},
            indent=2,
            sort_keys=True,
        )
        + "\n"
    )
    _copy_python_model(root, "recommend", v)
    _write_config(
        root,
        "recommend",
        {
            **common,
            "max_batch_size": cfg.max_batch_size,
            "max_k": served_max_k(
                cfg.max_k, int(summary["num_candidates"]), int(summary["n_items"])
            ),
            "user_tower_model": "user_tower",
            "retrieval_model": "retrieval",
            "ranker_model": "ranker",
            "ranker_max_batch_size": ranker_batch,
            "retrieval_mode": cfg.retrieval_mode,
            "intra_op_threads": cfg.intra_op_threads,
            "faiss_threads": cfg.faiss_threads,
            "profile_store": cfg.profile_store,
            "exposure_log": cfg.exposure_log,
            "exposure_buffer": cfg.exposure_buffer,
            "targeting_rules": _checked_rules(cfg.targeting_rules, recommend_dir),
            "rules_check_s": cfg.rules_check_s,
            "policy": parse_policy(cfg.policy, cfg.policy_depth).id.split("@")[0],
            "policy_depth": cfg.policy_depth,
            "experiments": _checked_experiments(
                cfg.experiments,
                cfg.policy_depth,
                recommend_dir,
                {f"ranker:{n}" for n in ranker_versions},
                served_max_k(cfg.max_k, int(summary["num_candidates"]), int(summary["n_items"])),
            ),
            "bandit_state": _checked_bandit(cfg.bandit_state, cfg.policy_depth),
            "bandit_name": cfg.bandit_name,
            "instance_group": (
                f"instance_group [ {{ count: {cfg.recommend_instances} kind: KIND_CPU }} ]"
                if cfg.recommend_instances
                else "# instance_group: Triton's default"
            ),
        },
    )
    if ranker_versions:
        # the ranker versions arms route to (model: ranker:<version>), and the default
        # one named explicitly (-1 would pick the newest loaded)
        recommend_config = root / "recommend" / "config.pbtxt"
        listed = ",".join(str(n) for n in ranker_versions)
        recommend_config.write_text(
            recommend_config.read_text()
            + "# Ranker versions A/B arms route to (model: ranker:<version>), and the default.\n"
            + f'parameters {{ key: "ranker_version" value: {{ string_value: "{v}" }} }}\n'
            + f'parameters {{ key: "ranker_versions" value: {{ string_value: "{listed}" }} }}\n'
        )
    if cfg.cold_items:
        from recsys.serving.cold_items import write_cold_items

        write_cold_items(run, recommend_dir)
        recommend_config = root / "recommend" / "config.pbtxt"
        cold = {
            "cold_items_store": cfg.cold_items,
            "cold_items_poll_s": cfg.cold_items_poll_s,
            "cold_items_max": cfg.cold_items_max,
            "cold_items_per_poll": cfg.cold_items_per_poll,
        }
        recommend_config.write_text(
            recommend_config.read_text()
            + "# Cold items: the catalogue of published items (recsys.runtime.cold_items).\n"
            + "".join(
                f'parameters {{ key: "{k}" value: {{ string_value: "{v}" }} }}\n'
                for k, v in cold.items()
            )
        )
    files["recommend"] = sorted(recommend_dir.iterdir())
    LOGGER.info("wrote Triton repository %s (version %d) from %s", root, v, run.describe())
    return RepositoryInfo(
        root=root, version=v, manifest=manifest, files=files, config=cfg, bundle=run
    )


def _add_ranker_bundles(
    run: RunBundle, manifest: ExportManifest, bundles: Sequence[str], root: Path, version: int
) -> list[int]:
    """Copies the rankers of ``bundles`` as versions ``version + 1, ...`` of ``ranker``.

    Each must take the main ranker's inputs from the same request-time features (the
    ``recommend`` model computes one set of ranker inputs), so its export manifest's
    ranker inputs and its ranker feature files must equal the main bundle's.

    Returns:
        The version numbers written.

    Raises:
        ValueError: a bundle's ranker does not fit the main one's inputs.
    """
    numbers: list[int] = []
    main_inputs = manifest["ranker"].inputs
    main_features = (run.path(layout.RUNTIME_DIR) / "ranker_features.json").read_bytes()
    for offset, folder in enumerate(bundles, start=1):
        other = RunBundle.open(folder, required=layout.SERVING_FILES)
        other_manifest = ExportManifest.load(other.path(layout.EXPORT_MANIFEST))
        if other_manifest["ranker"].inputs != main_inputs:
            raise ValueError(
                f"ranker bundle {folder}: its ranker's inputs differ from the main bundle's"
            )
        features = (other.path(layout.RUNTIME_DIR) / "ranker_features.json").read_bytes()
        if features != main_features:
            raise ValueError(
                f"ranker bundle {folder}: its ranker features differ from the main bundle's "
                "(the served ranker inputs would not be the ones it was trained on)"
            )
        number = version + offset
        _copy_model_file(
            other.path(layout.model_path("ranker")), root / "ranker" / str(number) / "model.onnx"
        )
        LOGGER.info("ranker version %d from %s", number, other.describe())
        numbers.append(number)
    return numbers


def _checked_experiments(
    path: str,
    depth: int,
    recommend_dir: Path | None = None,
    rankers: set[str] | None = None,
    max_k: int | None = None,
) -> str:
    """The experiments file's absolute path, after loading it and checking its arms:
    policies parse; each arm's ``model`` is a ranker version the repository holds;
    its ``params`` make valid settings with the served ones; ``num_candidates`` is at
    most ``max_k``.

    Raises:
        ExperimentConfigError: the file does not load (located at its line and column).
        ValueError: an arm names a policy that does not parse, a missing model version,
            or parameters the served settings refuse.
    """
    if not path:
        return ""
    from recsys.experiments.loader import load_experiments

    resolved = Path(path).resolve()
    if not resolved.is_file():
        raise FileNotFoundError(f"experiments file {resolved} does not exist")
    loaded = load_experiments(resolved)
    settings = None
    if recommend_dir is not None:
        from dataclasses import replace

        from recsys.runtime.engine import SETTINGS_PARAMS, RecommendTables

        settings = RecommendTables.load(recommend_dir).settings
    for layer in loaded.experiments.layers:
        for exp in layer.experiments:
            for arm in exp.arms:
                where = f"{resolved}: experiment {exp.name!r} arm {arm.name!r}"
                try:
                    if arm.policy is not None:
                        parse_policy(arm.policy, depth)
                    if settings is not None:
                        updates = {k: v for k, v in arm.params.items() if k in SETTINGS_PARAMS}
                        depth_n = updates.pop("num_candidates", None)
                        if "mmr_depth" in updates:
                            updates["mmr_depth"] = int(updates["mmr_depth"])
                        replace(settings, **updates)  # raises on invalid settings
                        if depth_n is not None and max_k is not None and depth_n > max_k:
                            raise ValueError(
                                f"num_candidates {depth_n} exceeds the served max_k {max_k} "
                                "(build with a larger max_k to allow it)"
                            )
                except ValueError as error:
                    raise ValueError(f"{where}: {error}") from None
                if arm.model is not None and rankers is not None and arm.model not in rankers:
                    raise ValueError(
                        f"{where}: model {arm.model!r} is not in the repository (other ranker "
                        f"versions: {sorted(rankers) or 'none'}; add one with ranker_bundles "
                        "/ build-repo --ranker-bundle)"
                    )
    LOGGER.info("experiments %s", loaded.source)
    return str(resolved)


def _checked_bandit(path: str, depth: int) -> str:
    """The bandit state file's absolute path, after loading it (arms must be policies)."""
    if not path:
        return ""
    from recsys.bandits.serving import PolicyBandit

    resolved = Path(path).resolve()
    PolicyBandit(resolved, depth=depth)  # raises ValueError naming what is wrong
    return str(resolved)


def _checked_rules(path: str, recommend_dir: Path) -> str:
    """The rules file's absolute path, after loading it against the served catalogue.

    Raises:
        RuleError: the file does not load (located at its line and column).
        FileNotFoundError: no such file.
    """
    if not path:
        return ""
    from recsys.runtime.engine import RecommendTables
    from recsys.targeting import load_rules

    rules_path = Path(path).resolve()
    if not rules_path.is_file():
        raise FileNotFoundError(f"targeting rules file {rules_path} does not exist")
    tables = RecommendTables.load(recommend_dir)
    rules = load_rules(rules_path, tables.catalog())
    LOGGER.info("targeting rules %s: %d rule(s)", rules.source, len(rules))
    return str(rules_path)


# -- versions and roll-in ------------------------------------------------------------


_PARAMETER = re.compile(
    r'parameters\s*\{\s*key:\s*"([^"]+)"\s*value:\s*\{\s*string_value:\s*"([^"]*)"\s*\}\s*\}'
)


def model_parameters(root: str | Path, model: str) -> dict[str, str]:
    """The ``parameters`` of a model's ``config.pbtxt`` in a repository (key -> value).

    Example:
        >>> model_parameters("artifacts/triton_repo", "recommend")["policy"]  # doctest: +SKIP
        'deterministic'
    """
    text = (Path(root) / model / "config.pbtxt").read_text(encoding="utf-8")
    return {m.group(1): m.group(2) for m in _PARAMETER.finditer(text)}


def model_versions(root: str | Path, model: str) -> list[int]:
    """The numbered version folders of ``model`` in repository ``root``, ascending."""
    folder = Path(root) / model
    if not folder.is_dir():
        raise FileNotFoundError(f"no model folder {folder}")
    return sorted(int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit())


def add_model_version(
    root: str | Path,
    model: str,
    source: str | Path,
    version: int | None = None,
) -> int:
    """Copies a new version of ``model`` into the repository (without loading it).

    Args:
        root: the repository.
        model: the model name (its ``config.pbtxt`` stays as it is: a new version must
            keep the inputs and outputs).
        source: a version folder to copy (e.g. ``<staging>/ranker/1``), or a single
            file that becomes the version's ``model.onnx``.
        version: the new version number; default one above the newest.

    Returns:
        The version number written.

    Raises:
        FileExistsError: that version folder exists already.
    """
    existing = model_versions(root, model)
    number = version if version is not None else (max(existing, default=0) + 1)
    target = Path(root) / model / str(number)
    if target.exists():
        raise FileExistsError(f"{target} exists already")
    src = Path(source)
    # Written under a temporary name first: Triton (poll mode) or a concurrent
    # load_model must never see a half-copied version folder.
    partial = Path(root) / model / f".{number}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    if src.is_dir():
        shutil.copytree(src, partial)
    else:
        partial.mkdir(parents=True)
        shutil.copy2(src, partial / "model.onnx")
    partial.rename(target)
    return number


def roll_in(server: Any, model: str, *, timeout_s: float = 120.0) -> list[int]:
    """Loads the newest version of ``model`` (explicit model control) and waits for it.

    Triton loads the new version, serves it as soon as it is ready and unloads the
    versions the policy (``latest 1``) no longer keeps; requests in flight finish on
    the version they started on.

    Args:
        server: a :class:`~recsys.serving.server.LocalTritonServer`, or anything with
            ``load_model(name)`` and ``is_model_ready(name, version)``.
        model: the model to reload.
        timeout_s: how long to wait for the newest version to report ready.

    Returns:
        The versions ready after the switch.

    Raises:
        ModelLoadError: Triton refused the new version (its message says why); the
            previous version keeps serving.
    """
    import time

    server.load_model(model)
    root = Path(server.config.model_repository)
    newest = str(max(model_versions(root, model)))
    deadline = time.monotonic() + timeout_s
    while not server.is_model_ready(model, newest):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{model} version {newest} not ready after {timeout_s:.0f} s")
        time.sleep(0.05)
    return [v for v in model_versions(root, model) if server.is_model_ready(model, str(v))]


def describe(root: str | Path) -> dict[str, Any]:
    """A summary of a repository: per model, its versions and config file (for the CLI)."""
    out: dict[str, Any] = {}
    for name in MODEL_NAMES:
        folder = Path(root) / name
        if folder.is_dir():
            out[name] = {
                "versions": model_versions(root, name),
                "config": str(folder / "config.pbtxt"),
            }
    tables = Path(root) / "recommend"
    if tables.is_dir():
        versions = model_versions(root, "recommend")
        if versions:
            meta = json.loads((tables / str(versions[-1]) / META_FILE).read_text())
            out["recommend"]["settings"] = meta["settings"]
            out["recommend"]["num_candidates"] = meta["num_candidates"]
    return out
