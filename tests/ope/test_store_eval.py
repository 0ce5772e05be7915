"""Off-policy evaluation of a policy bandit straight from the event store
(:mod:`recsys.ope.store_eval`): SQLite and a real Redis give the same estimates, the
filters, the errors, the promotion gate, ``python -m recsys.ope evaluate --store`` and
the Hydra app ``python -m recsys.ope.app``.

The log is a synthetic policy bandit with a known truth (three arms, two contexts,
logging probabilities chosen per context, known per-(context, arm) click rates), plus
exposures of another bandit, published with the real producer.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from recsys.bandits import LinUCB, save_state
from recsys.bandits.online import BanditUpdater
from recsys.config import ConfigError
from recsys.events.producer import EventProducer
from recsys.events.redis_store import RedisStore
from recsys.events.sqlite_store import SqliteStore
from recsys.ope.app import run_app
from recsys.ope.cli import main
from recsys.ope.errors import OPEInputError
from recsys.ope.policy_choice import policy_choice_log
from recsys.ope.store_eval import (
    StoreEvaluateConfig,
    config_from_mapping,
    evaluate_store,
    parse_time_us,
    policy_distribution,
    read_store_events,
    store_url,
)
from recsys.runtime.context import RequestContext
from recsys.runtime.exposure import exposure_event

REPO = Path(__file__).resolve().parents[2]
T0_MS = 1_765_000_000_000  # 2025-12-06T05:46:40Z; exposure n at T0 + n minutes
ARMS = ["deterministic", "epsilon_greedy:0.1", "plackett_luce:0.3"]
CONTEXTS = ((1.0, 0.0), (1.0, 1.0))
LOGGING = np.array([[0.5, 0.3, 0.2], [0.2, 0.3, 0.5]])  # P(arm | context), logged
RATES = np.array([[0.05, 0.30, 0.20], [0.15, 0.40, 0.10]])  # per-item click rate
N = 2000  # exposures of bandit "ranking"
OTHER = 150  # exposures of bandit "other" (every 7th minute, its own request ids)


def _shown(n: int, arm: int, c: int, bandit: str, request_id: str, at_ms: int) -> dict[str, Any]:
    ctx = RequestContext(request_time_ms=at_ms, request_id=request_id)
    extra = {"bandit": bandit, "bandit_arm": arm, "bandit_context": list(CONTEXTS[c]),
             "bandit_propensity": float(LOGGING[c, arm])}  # fmt: skip
    return exposure_event(
        user_id=f"u{n % 40}", items=[10 * n, 10 * n + 1], scores=[2.0, 1.0], context=ctx,
        k=2, bundle="b1", model="recommend:1", extra=extra,
    )  # fmt: skip


def synthetic_events(seed: int = 11) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """The store's events, and each arm's true value on the logged contexts of ``ranking``."""
    rng = np.random.default_rng(seed)
    events: list[dict[str, Any]] = []
    contexts: list[int] = []
    for n in range(N):
        c = int(rng.integers(2))
        a = int(rng.choice(3, p=LOGGING[c]))
        at = T0_MS + n * 60_000
        events.append(_shown(n, a, c, "ranking@1", f"r-{n}", at))
        contexts.append(c)
        for p in np.flatnonzero(rng.random(2) < RATES[c, a]):
            events.append({
                "event_id": f"c-{n}-{p}", "user_id": f"u{n % 40}", "session_id": f"u{n % 40}",
                "type": "click", "item_id": 10 * n + int(p), "timestamp": at / 1000 + 5 + p,
                "payload": {"request_id": f"r-{n}"},
            })  # fmt: skip
    for m in range(OTHER):
        events.append(_shown(m, m % 3, m % 2, "other@4", f"o-{m}", T0_MS + 7 * m * 60_000 + 1))
    truth = {name: float(RATES[contexts, a].mean()) for a, name in enumerate(ARMS)}
    return events, truth


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, float]]:
    """A SQLite store holding the synthetic events, and the arms' true values."""
    events, truth = synthetic_events()
    path = tmp_path_factory.mktemp("store_eval") / "rt.db"
    store = SqliteStore(path)
    try:
        EventProducer(store).publish(events)
    finally:
        store.close()
    return path, truth


@pytest.fixture(params=[1, 3], ids=["one-stream", "three-partitions"])
def redis_store(request: pytest.FixtureRequest, redis_url: str) -> Iterator[str]:
    """A fresh prefix of the session's redis-server holding the same events (its URL),
    in one stream or three partitions (the URL names no count: the prefix records it)."""
    prefix = f"ope{uuid.uuid4().hex[:10]}"
    store = RedisStore(redis_url, prefix=prefix, partitions=request.param)
    try:
        EventProducer(store).publish(synthetic_events()[0])
        yield f"{redis_url}?prefix={prefix}"
    finally:
        for key in store.r.scan_iter(f"{prefix}:*"):
            store.r.delete(key)
        store.close()


def _config(store: Path | str, **kw: Any) -> StoreEvaluateConfig:
    base: dict[str, Any] = {"store": str(store), "bandit": "ranking", "candidate": "uniform",
                            "arms": ARMS, "estimators": "ips,snips,dr", "resamples": 100,
                            "seed": 3}  # fmt: skip
    base.update(kw)
    return StoreEvaluateConfig(**base)


def _iso(n: int) -> str:
    """Exposure ``n``'s time as naive ISO 8601 (read as UTC)."""
    return datetime.fromtimestamp((T0_MS + n * 60_000) / 1000, UTC).replace(tzinfo=None).isoformat()


def test_sqlite_and_redis_stores_give_the_same_estimates(
    logged: tuple[Path, dict[str, float]], redis_store: str
) -> None:
    path, _ = logged
    config = _config(path, candidate="arm:epsilon_greedy:0.1")
    lite = evaluate_store(config, echo=False)
    red = evaluate_store(replace(config, store=redis_store), echo=False)
    assert lite["rows"] == red["rows"] == N
    assert lite["store"] != red["store"]
    for key in ("arms", "skipped", "logged_mean_reward", "estimates"):
        assert lite[key] == red[key], key
    # the same events, though not in the same stream order (a Redis stream groups each
    # user's events of one publish call into one entry): the log is in time order
    a, b = read_store_events(str(path)), read_store_events(redis_store)
    assert sorted(e.event_id for e in a) == sorted(e.event_id for e in b)
    assert [e.event_id for e in a] != [e.event_id for e in b]
    assert len(a) > N + OTHER  # exposures of both bandits and the clicks


def test_estimates_recover_each_arms_truth_and_the_logged_counts(
    logged: tuple[Path, dict[str, float]], capsys: pytest.CaptureFixture[str]
) -> None:
    path, truth = logged
    for name in ARMS:
        result = evaluate_store(_config(path, candidate=f"arm:{name}", truth=truth[name]))
        for e in result["estimates"]:
            assert abs(e["value"] - truth[name]) < 4 * e["std_error"], (name, e)
    assert sum(result["arms"].values()) == N and list(result["arms"]) == ARMS
    expected = LOGGING.mean(axis=0) * N
    assert np.all(
        np.abs(np.array(list(result["arms"].values())) - expected) < 4 * np.sqrt(expected)
    )
    printed = capsys.readouterr().out
    assert f"{N} exposures of bandit 'ranking'" in printed
    assert "| SNIPS |" in printed and "rel. error vs truth" in printed


def test_time_window_and_bandit_filters(logged: tuple[Path, dict[str, float]]) -> None:
    path, _ = logged
    assert parse_time_us(_iso(100)) == (T0_MS + 100 * 60_000) * 1000
    # [exposure 100, exposure 300): ISO 8601 and epoch seconds mixed
    until = str((T0_MS + 300 * 60_000) / 1000)
    part = evaluate_store(_config(path, since=_iso(100), until=until), echo=False)
    assert part["rows"] == 200
    assert evaluate_store(_config(path, since=_iso(N - 10)), echo=False)["rows"] == 10
    assert evaluate_store(_config(path, until=_iso(1)), echo=False)["rows"] == 1
    whole = evaluate_store(_config(path), echo=False)
    assert whole["rows"] == N  # the other bandit's exposures are not in it
    assert whole["estimates"] != part["estimates"]
    # the other bandit by its name (any version); its arms are named arm0 ..
    other = evaluate_store(_config(path, bandit="other@1", arms=None), echo=False)
    assert other["rows"] == OTHER and list(other["arms"]) == ["arm0", "arm1", "arm2"]
    assert other["arms"] == {"arm0": 50, "arm1": 50, "arm2": 50}


def test_errors_name_what_is_wrong(logged: tuple[Path, dict[str, float]], tmp_path: Path) -> None:
    path, _ = logged
    with pytest.raises(
        OPEInputError, match=r"none of bandit 'nope' \(bandits logged: other, ranking\)"
    ):
        evaluate_store(_config(path, bandit="nope"), echo=False)
    with pytest.raises(OPEInputError, match=rf"'ranking' in the range given \({N} exposures"):
        evaluate_store(_config(path, since="2030-01-01"), echo=False)
    with pytest.raises(OPEInputError, match="range given"):
        evaluate_store(_config(path, since=_iso(50), until=_iso(50)), echo=False)
    with pytest.raises(FileNotFoundError, match=r"event store .*missing\.db: no such SQLite file"):
        evaluate_store(_config(tmp_path / "missing.db"), echo=False)
    assert not (tmp_path / "missing.db").exists()  # reading never creates a store
    with pytest.raises(ConfigError, match="since: 'yesterday' is neither epoch seconds nor ISO"):
        _config(path, since="yesterday")
    with pytest.raises(ConfigError, match="current and current_value: give one"):
        _config(path, current="uniform", current_value=0.1)
    with pytest.raises(ConfigError, match="gate: needs intervals"):
        _config(path, gate="snips", resamples=0)
    with pytest.raises(ConfigError, match="unknown key"):
        config_from_mapping({"store": "x", "bandit": "b", "candidate": "uniform", "windw_s": 1})
    with pytest.raises(OPEInputError, match="gate ips: that estimator was not run"):
        evaluate_store(_config(path, estimators="snips", gate="ips"), echo=False)


def test_policy_distribution_specs(logged: tuple[Path, dict[str, float]], tmp_path: Path) -> None:
    path, _ = logged
    log = policy_choice_log(read_store_events(str(path)), bandit="ranking", arms=ARMS)
    n = log.log.n_rounds
    np.testing.assert_allclose(policy_distribution("uniform", log), np.full((n, 3), 1 / 3))
    fixed = policy_distribution("arm:plackett_luce:0.3", log)  # an arm name with a colon
    assert fixed.shape == (n, 3) and np.all(fixed[:, 2] == 1.0)
    with pytest.raises(OPEInputError, match=r"arm:greedy: no such arm \(arms: deterministic, "):
        policy_distribution("arm:greedy", log)
    with pytest.raises(OPEInputError, match="arm:: no such arm"):
        policy_distribution("arm:", log)
    with pytest.raises(OPEInputError, match="expected uniform, arm:<name> or a bandit state"):
        policy_distribution("Uniform", log)
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not json")
    with pytest.raises(OPEInputError, match=r"garbage\.json: not a bandit state file"):
        policy_distribution(str(garbage), log)
    no_bandit = tmp_path / "no_bandit.json"
    no_bandit.write_text(json.dumps({"arms": ARMS}))
    with pytest.raises(OPEInputError, match=r"no_bandit\.json: not a bandit state file"):
        policy_distribution(str(no_bandit), log)
    other_arms = save_state(
        LinUCB(3, 2), tmp_path / "other_arms.json", ["a", "b", "c"], ["x0", "x1"]
    )
    with pytest.raises(OPEInputError, match=r"its arms \['a', 'b', 'c'\] are not the log's"):
        policy_distribution(str(other_arms), log)
    wide = save_state(LinUCB(3, 4), tmp_path / "wide.json", ARMS, ["a", "b", "c", "d"])
    with pytest.raises(OPEInputError, match="over 4 context values, the log has 3 arms and 2"):
        policy_distribution(str(wide), log)


def _learned_state(path: Path, folder: Path) -> Path:
    """A greedy LinUCB the online updater trained on the store's stream, saved."""
    bandit = LinUCB(3, 2, alpha=0.0)
    updater = BanditUpdater(bandit, "ranking", window_s=1800)
    for event in read_store_events(str(path)):
        updater.feed(event)
    updater.flush()
    assert updater.stats.updates == N
    return save_state(bandit, folder / "candidate.json", ARMS, ["bias", "x1"])


def test_the_gate_promotes_a_better_policy_and_refuses_a_worse_one(
    logged: tuple[Path, dict[str, float]], tmp_path: Path
) -> None:
    path, truth = logged
    assert truth["epsilon_greedy:0.1"] > truth["plackett_luce:0.3"] > truth["deterministic"]
    # a candidate state file the updater learned from the same log: greedy, it picks the
    # best arm (epsilon_greedy:0.1) at both contexts, so it is estimated as that arm
    state = _learned_state(path, tmp_path)
    good = evaluate_store(
        _config(path, candidate=str(state), arms=None, current="arm:deterministic",
                gate="snips", report_dir=str(tmp_path / "good")),
        echo=False,
    )  # fmt: skip
    fixed = evaluate_store(_config(path, candidate="arm:epsilon_greedy:0.1"), echo=False)
    assert good["estimates"] == fixed["estimates"]
    decision = good["promotion"]
    assert decision["promote"] is True and decision["decision"] == "promote"
    assert decision["candidate"]["lower"] > decision["current_value"]
    assert abs(decision["current_value"] - truth["deterministic"]) < 0.03
    saved = json.loads((tmp_path / "good" / "promotion.json").read_text())
    assert saved["promote"] is True and saved["current_name"] == "arm:deterministic"
    assert "Decision: **promote**" in (tmp_path / "good" / "promotion.md").read_text()
    # a worse candidate against the better live arm is refused
    bad = evaluate_store(
        _config(path, candidate="arm:plackett_luce:0.3", current="arm:epsilon_greedy:0.1",
                gate="snips", report_dir=str(tmp_path / "bad")),
        echo=False,
    )  # fmt: skip
    assert bad["promotion"]["promote"] is False
    assert bad["promotion"]["candidate"]["upper"] < bad["promotion"]["current_value"]
    assert "Decision: **keep current**" in (tmp_path / "bad" / "promotion.md").read_text()
    assert json.loads((tmp_path / "bad" / "promotion.json").read_text())["promote"] is False
    # against the log's own mean reward (no current): the best arm beats the mix
    mixed = evaluate_store(_config(path, candidate="arm:epsilon_greedy:0.1", gate="dr"), echo=False)
    assert mixed["promotion"]["promote"] is True
    assert mixed["promotion"]["current_value"] == pytest.approx(mixed["logged_mean_reward"])
    # a margin larger than the gap keeps the current policy
    gap = decision["candidate"]["lower"] - decision["current_value"]
    held = evaluate_store(
        _config(path, candidate=str(state), arms=None, current="arm:deterministic",
                gate="snips", margin=gap + 0.01),
        echo=False,
    )  # fmt: skip
    assert held["promotion"]["promote"] is False


def test_the_command_line(logged: tuple[Path, dict[str, float]], tmp_path: Path) -> None:
    path, truth = logged
    out = tmp_path / "estimates.json"
    cmd = [sys.executable, "-m", "recsys.ope", "evaluate", "--store", store_url(str(path)),
           "--bandit", "ranking", "--candidate", "arm:epsilon_greedy:0.1", "--arms",
           ",".join(ARMS), "--current", "arm:deterministic", "--gate", "snips",
           "--estimators", "ips,snips,dr", "--resamples", "100", "--seed", "3",
           "--truth", str(truth["epsilon_greedy:0.1"]), "--report-dir", str(tmp_path / "gate"),
           "--json", str(out), "--no-progress"]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert f"{N} exposures of bandit 'ranking'" in done.stdout
    assert "Decision: **promote**" in done.stdout
    data = json.loads(out.read_text())
    function = evaluate_store(
        _config(path, candidate="arm:epsilon_greedy:0.1", current="arm:deterministic",
                gate="snips", truth=truth["epsilon_greedy:0.1"]),
        echo=False,
    )  # fmt: skip
    assert data["estimates"] == function["estimates"]
    assert data["promotion"]["promote"] is True
    assert (tmp_path / "gate" / "promotion.md").is_file()
    # bad input: exit 2 and one message
    cmd_bad = [sys.executable, "-m", "recsys.ope", "evaluate", "--store", str(path), "--bandit",
               "nope", "--candidate", "uniform", "--resamples", "10"]  # fmt: skip
    bad = subprocess.run(cmd_bad, capture_output=True, text=True, timeout=300, check=False)
    assert bad.returncode == 2
    assert "error: exposures: none of bandit 'nope'" in bad.stderr
    missing = subprocess.run([*cmd_bad[:8], "--resamples", "10"], capture_output=True,
                             text=True, timeout=300, check=False)  # fmt: skip
    assert missing.returncode == 2 and "--store needs --candidate" in missing.stderr
    # --exit-code: the gate's decision is the exit status (0 promote, 1 keep current)
    args = [a for a in cmd[3:] if a != "--no-progress"] + ["--no-progress", "--exit-code"]
    assert main(args) == 0
    assert main([*args, "--margin", "1.0"]) == 1  # no candidate clears a margin of 1
    held = json.loads((tmp_path / "gate" / "promotion.json").read_text())
    assert held["decision"] == "keep current"
    no_gate = [a for a in args if a not in ("--gate", "snips")]
    assert main(no_gate) == 2


def test_the_hydra_app_gives_the_functions_numbers(
    logged: tuple[Path, dict[str, float]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = logged
    run_dir = tmp_path / "hydra"
    status = run_app([f"store=sqlite://{path}", "bandit=ranking",
                      "candidate=arm:epsilon_greedy:0.1", f"arms=[{','.join(ARMS)}]",
                      "current=arm:deterministic", "gate=snips", "estimators='ips,snips,dr'",
                      "resamples=100", "seed=3", "progress=false",
                      f"hydra.run.dir={run_dir}"])  # fmt: skip
    assert status == 0, capsys.readouterr().err
    app = json.loads((run_dir / "estimates.json").read_text())
    assert (run_dir / "promotion.json").is_file() and (run_dir / "promotion.md").is_file()
    assert (run_dir / ".hydra" / "overrides.yaml").is_file()
    function = evaluate_store(
        _config(path, candidate="arm:epsilon_greedy:0.1", current="arm:deterministic",
                gate="snips"),
        echo=False,
    )  # fmt: skip
    assert app["estimates"] == function["estimates"]
    assert app["promotion"] == function["promotion"]
    assert app["rows"] == N
    # a different seed changes the intervals, not the point values
    other = tmp_path / "seed4"
    assert run_app([f"store={path}", "bandit=ranking", "candidate=arm:epsilon_greedy:0.1",
                    f"arms=[{','.join(ARMS)}]", "estimators='ips,snips,dr'", "resamples=100",
                    "seed=4", "progress=false", f"hydra.run.dir={other}"]) == 0  # fmt: skip
    seed4 = json.loads((other / "estimates.json").read_text())["estimates"]
    assert [e["value"] for e in seed4] == [e["value"] for e in function["estimates"]]
    assert [e["lower"] for e in seed4] != [e["lower"] for e in function["estimates"]]
    capsys.readouterr()
    # bad values and refused inputs exit 2 with one message
    assert run_app([f"store={path}", "bandit=ranking", "candidate=uniform", "reward=clicks",
                    f"hydra.run.dir={tmp_path / 'bad'}"]) == 2  # fmt: skip
    assert "reward: expected one of" in capsys.readouterr().err
    assert run_app([f"store={path}", "bandit=nope", "candidate=uniform", "resamples=10",
                    "progress=false", f"hydra.run.dir={tmp_path / 'nope'}"]) == 2  # fmt: skip
    assert "none of bandit 'nope'" in capsys.readouterr().err
    assert run_app([f"store={path}", "bandit=ranking"]) == 2  # candidate: ??? (required)
    # exit_code=true: the gate's decision is the exit status, as with --exit-code
    gated = [f"store={path}", "bandit=ranking", "candidate=arm:epsilon_greedy:0.1",
             f"arms=[{','.join(ARMS)}]", "current=arm:deterministic", "gate=snips",
             "estimators=snips", "resamples=50", "progress=false", "exit_code=true"]  # fmt: skip
    assert run_app([*gated, f"hydra.run.dir={tmp_path / 'promote'}"]) == 0
    assert run_app([*gated, "margin=1.0", f"hydra.run.dir={tmp_path / 'keep'}"]) == 1
    kept = json.loads((tmp_path / "keep" / "promotion.json").read_text())
    assert kept["decision"] == "keep current"
    capsys.readouterr()
    no_gate = [a for a in gated if a != "gate=snips"]
    assert run_app([*no_gate, f"hydra.run.dir={tmp_path / 'no-gate'}"]) == 2
    assert "exit_code needs gate" in capsys.readouterr().err
