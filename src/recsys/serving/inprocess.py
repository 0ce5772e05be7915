"""The ``recommend`` model of a Triton repository, run in this process.

:func:`engine_from_repository` builds the same :class:`~recsys.runtime.engine.
RecommendEngine` the server's python backend builds, from the same files and the same
settings (the ``recommend`` model's config parameters: profile store, targeting rules,
slate policy, ``max_k``), with onnxruntime in place of the ONNX models' Triton backend
and the saved FAISS index in place of the ``retrieval`` model (a repository built with
``retrieval_mode="inline"``: the user tower and index copies its ``recommend`` instances
read). It serves what needs the
server's answers without the server: the simulator's fast mode, offline replays, and
the tests that compare the two.

Example:
    >>> engine = engine_from_repository("artifacts/triton_repo")  # doctest: +SKIP
    >>> [answer] = engine.recommend(np.array([196]), np.array([10]))  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from recsys.serving.repository import model_parameters, model_versions


def onnx_ranker(session: Any) -> Any:
    """The engine's ranker call over an onnxruntime session of the exported ranker: its
    inputs positionally, in the graph's order (``dense, ids[, list_ids]``) -> logits."""
    names = [i.name for i in session.get_inputs()]

    def run(*inputs: Any) -> Any:
        return session.run(["logits"], dict(zip(names, inputs, strict=True)))[0]

    return run


def engine_from_repository(
    root: str | Path,
    *,
    user_state: bool = True,
    rules: bool = True,
    threads: int = 1,
    cold_items: bool = True,
) -> Any:
    """The repository's ``recommend`` engine (newest version), in-process.

    Args:
        root: the Triton model repository (``build-repo``'s output).
        user_state: read real-time profiles from the repository's ``profile_store``.
        rules: apply the repository's targeting rules file (reloaded when it changes).
        threads: onnxruntime intra-op threads.
        cold_items: serve the items of the repository's ``cold_items_store`` catalogue
            (:mod:`recsys.runtime.cold_items`): read now, and polled before each
            ``recommend`` call as the server polls before each batch; the updater is the
            engine's ``cold_items`` attribute.

    Returns:
        A :class:`~recsys.runtime.engine.RecommendEngine`.
    """
    import onnxruntime as ort

    from recsys.runtime.engine import RecommendEngine, RecommendTables
    from recsys.runtime.faiss_search import FaissSearcher
    from recsys.runtime.inline_stages import load_inline_stages, onnx_tower
    from recsys.runtime.policies import parse_policy
    from recsys.runtime.ranker_features import RankerFeatures
    from recsys.runtime.targeting import RuleFile
    from recsys.runtime.user_state import ProfileStoreReader
    from recsys.targeting import load_rules

    repo = Path(root)
    params = model_parameters(repo, "recommend")
    folder = repo / "recommend" / str(model_versions(repo, "recommend")[-1])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads

    def session(model: str, version: int | None = None) -> Any:
        number = model_versions(repo, model)[-1] if version is None else version
        return ort.InferenceSession(str(repo / model / str(number) / "model.onnx"), options)

    # with ranker versions for A/B arms the default is named (the server does the same)
    default_ranker = int(params["ranker_version"]) if params.get("ranker_version") else None
    ranker = session("ranker", default_ranker)
    rankers = {
        f"ranker:{v}": onnx_ranker(session("ranker", int(v)))
        for v in params.get("ranker_versions", "").split(",")
        if v
    }
    if params.get("retrieval_mode", "models") == "inline":
        # the copies the server's recommend instances read
        inline = load_inline_stages(folder, threads=threads)
        user_tower, retrieval = inline.user_tower, inline.retrieval
    else:
        searcher = FaissSearcher.load(
            repo / "retrieval" / str(model_versions(repo, "retrieval")[-1])
        )
        tower = repo / "user_tower" / str(model_versions(repo, "user_tower")[-1]) / "model.onnx"
        user_tower, retrieval = onnx_tower(tower, threads), searcher.search
    tables = RecommendTables.load(folder)
    store = params.get("profile_store", "")
    reader = ProfileStoreReader.from_folder(store, folder) if user_state and store else None
    rule_source = None
    held: dict[str, Any] = {}  # the engine, once built: its tables grow with cold items
    if rules and params.get("targeting_rules"):
        rule_source = RuleFile(
            params["targeting_rules"],
            lambda path: load_rules(path, (held["engine"].tables if held else tables).catalog()),
            check_s=float(params.get("rules_check_s", "1.0")),
        )
    experiments = None
    if params.get("experiments"):
        from recsys.experiments.loader import load_experiments

        experiments = load_experiments(params["experiments"]).experiments
    chooser = None
    if params.get("bandit_state"):
        from recsys.bandits.serving import PolicyBandit

        chooser = PolicyBandit(
            params["bandit_state"],
            name=params.get("bandit_name", "policy"),
            depth=int(params.get("policy_depth", "50")),
        )
    engine: Any = RecommendEngine(  # Any: cold items attach an updater below
        tables,
        RankerFeatures.load(folder),
        user_tower=user_tower,
        retrieval=retrieval,
        ranker=onnx_ranker(ranker),
        max_k=int(params.get("max_k", str(tables.num_candidates))),
        user_state=reader,
        rules=rule_source,
        policy=parse_policy(
            params.get("policy", "deterministic"), depth=int(params.get("policy_depth", "50"))
        ),
        experiments=experiments,
        chooser=chooser,
        rankers=rankers,
    )
    held["engine"] = engine
    if cold_items and params.get("cold_items_store"):
        from recsys.runtime.cold_items import ColdItemsConfig, open_cold_items, rules_follow

        updater = open_cold_items(
            engine,
            folder,
            params["cold_items_store"],
            ColdItemsConfig(
                poll_s=float(params.get("cold_items_poll_s", "2.0")),
                max_items=int(params.get("cold_items_max", "1000")),
                per_poll=int(params.get("cold_items_per_poll", "200")),
            ),
            on_change=rules_follow(engine),
        )
        serve = engine.recommend

        def recommend(*args: Any, **kwargs: Any) -> Any:
            updater.refresh()  # a due poll first, as the server's batch does
            return serve(*args, **kwargs)

        engine.cold_items = updater
        engine.recommend = recommend
    return engine
