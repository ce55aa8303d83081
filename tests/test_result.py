"""The typed result record: round trip, schema-1 records written before it, and clear errors for bad files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness import HarnessError
from harness.contract.result import RESULT_SCHEMA, TrialResult
from harness.store import ResultStore
from tests.factories import make_result, write_result

SCHEMA1 = Path(__file__).parent / "data" / "runs-schema1" / "synthetic"


def test_round_trip_through_json_keeps_every_field(tmp_path):
    result = make_result(metrics={"macro_f1": 0.25, "auroc": None}, metric_errors={"auroc": "ValueError: one class"},
                         warnings=["paper used split=iois"], notes={"prior_val_macro_f1": 0.3}, curve="curve.json",
                         model={"dir": "model", "files": {"predictor.pt": 10}, "bytes": 10, "onnx": False})
    write_result(tmp_path / result.key, result)
    text = json.loads((tmp_path / result.key / "result.json").read_text())
    assert text["schema"] == RESULT_SCHEMA == 2
    assert set(text) == {f for f in TrialResult.__dataclass_fields__}  # every field is written
    assert TrialResult.read(tmp_path / result.key / "result.json") == result


def test_schema1_records_written_before_still_load():
    records = [TrialResult.read(p) for p in sorted(SCHEMA1.glob("*/result.json"))]
    assert len(records) == 4
    ok = [r for r in records if r.ok]
    failed = [r for r in records if not r.ok]
    assert {r.method for r in ok} == {"constant"} and {r.method for r in failed} == {"always-fails"}
    assert all(r.metrics["accuracy"] is not None and r.latency["ms_per_image_b1"] > 0 for r in ok)
    assert all("deliberate failure" in r.error and "Traceback" in r.traceback for r in failed)
    assert all(r.model is None and r.warnings == [] and r.notes == {} for r in records)  # new fields: empty
    assert all(r.schema == RESULT_SCHEMA for r in records)  # read into the current record


def test_store_reads_schema1_as_done():
    store = ResultStore(SCHEMA1)
    keys = [p.parent.name for p in SCHEMA1.glob("*/result.json")]
    done = {k: store.is_done(k) for k in keys}
    assert sorted(done.values()) == [False, False, True, True]
    assert all(done[k] == k.startswith("constant") for k in keys)


def test_item_access_for_code_written_against_the_dict():
    result = make_result(status="failed")
    assert result["method"] == "resnet" and result.get("status") == "failed"
    assert result.get("latency") == {} and result.get("params") == 1000 and result.get("nope", 3) == 3
    assert result.get("model", "none") == "none"  # unset fields give the default, as dict.get did
    assert "error" in result and "model" not in result
    with pytest.raises(KeyError):
        result["nope"]


@pytest.mark.parametrize("payload, message", [
    ({"schema": 3, "key": "k", "method": "m", "dataset": "d", "status": "ok"}, "newer harness"),
    ({"schema": 2, "method": "m", "dataset": "d", "status": "ok"}, "key missing"),
    ({"schema": 2, "key": "k", "method": "m", "dataset": "d", "status": "done"}, "status must be one of"),
    ({"schema": 2, "key": "k", "method": "m", "dataset": "d", "status": "ok", "metrics": [0.5]},
     "'metrics' must be a dict"),
    ([1, 2], "expected a JSON object"),
])
def test_malformed_records_are_named_errors(payload, message, tmp_path):
    path = tmp_path / "result.json"
    path.write_text(json.dumps(payload))
    with pytest.raises(HarnessError, match=message) as err:
        TrialResult.read(path)
    assert str(path) in str(err.value)
    assert ResultStore(tmp_path.parent).load_result(tmp_path.name) is None  # not done: the trial runs again


def test_truncated_json_names_the_file(tmp_path):
    path = tmp_path / "result.json"
    path.write_text('{"schema": 2, "key": ')
    with pytest.raises(HarnessError, match="not valid JSON") as err:
        TrialResult.read(path)
    assert str(path) in str(err.value)
