"""PACS pieces without a server: Orthanc configuration, routing rules, watcher state and the watch loop."""

from __future__ import annotations

import json
import stat

import pytest

from meddx.errors import ConfigError, InputError, MeddxError, NetworkError
from meddx.pacs.orthanc import DICOMWEB_PLUGIN, read_credentials, write_config
from meddx.pacs.routing import load_routing, parse_routing
from meddx.pacs.state import WatchState, study_key
from meddx.pacs.watch import Watcher


# -- configuration ------------------------------------------------------------------------------------------
def test_config_is_loopback_authenticated_dicomweb(tmp_path):
    path = write_config(tmp_path / "pacs", http_port=18043, dicom_port=14243)
    cfg = json.loads(path.read_text())
    cred = tmp_path / "pacs" / "credentials"
    assert stat.S_IMODE(cred.stat().st_mode) == 0o600 and stat.S_IMODE(path.stat().st_mode) == 0o600
    user, password = read_credentials(cred)
    assert len(password) >= 20
    assert cfg["RegisteredUsers"] == {user: password}
    assert cfg["AuthenticationEnabled"] is True and cfg["RemoteAccessAllowed"] is False
    assert cfg["HttpPort"] == 18043 and cfg["DicomPort"] == 14243
    assert cfg["Plugins"] == [DICOMWEB_PLUGIN]
    assert cfg["DicomWeb"]["Enable"] is True and cfg["DicomWeb"]["Root"] == "/dicom-web/"
    assert cfg["StorageDirectory"].startswith(str((tmp_path / "pacs").resolve()))
    assert cfg["DicomAlwaysAllowStore"] is False and cfg["StableAge"] <= 10
    # the same folder again keeps the generated password and the modalities an administrator declared
    cfg["DicomModalities"] = {"ct1": ["CT1", "10.0.0.7", 104]}
    cfg["RemoteAccessAllowed"] = True
    path.write_text(json.dumps(cfg))
    again = json.loads(write_config(tmp_path / "pacs", http_port=18043, dicom_port=14243).read_text())
    assert read_credentials(cred) == (user, password)
    assert again["DicomModalities"] == {"ct1": ["CT1", "10.0.0.7", 104]} and again["RemoteAccessAllowed"] is False


def test_config_with_given_credentials(tmp_path):
    cred = tmp_path / "cred"
    cred.write_text("alice:s3cret-pass\n")
    cfg = json.loads(write_config(tmp_path / "p", credentials=cred).read_text())
    assert cfg["RegisteredUsers"] == {"alice": "s3cret-pass"}
    assert not (tmp_path / "p" / "credentials").exists()
    cred.write_text("no colon here\n")
    with pytest.raises(InputError, match="user:password"):
        write_config(tmp_path / "q", credentials=cred)
    with pytest.raises(InputError, match="port"):
        write_config(tmp_path / "r", http_port=70000)


def test_missing_orthanc_is_one_clear_line(monkeypatch, tmp_path):
    from meddx.pacs import orthanc

    monkeypatch.setattr(orthanc, "ORTHANC_BIN", str(tmp_path / "no-orthanc"))
    with pytest.raises(MeddxError, match="apt-get install orthanc orthanc-dicomweb"):
        orthanc.run_orthanc(tmp_path / "s", http_port=18044, dicom_port=14244)


# -- routing ------------------------------------------------------------------------------------------------
CT = {"uid": "1", "modality": "CT", "body_part": "ABDOMEN", "description": "Portal venous 1.0mm"}
MR = {"uid": "2", "modality": "MR", "body_part": "BRAIN", "description": "T1 post"}
CR = {"uid": "3", "modality": "CR", "body_part": "CHEST", "description": "PA"}
SR = {"uid": "4", "modality": "SR", "body_part": "", "description": "meddx SR x"}


def test_routing_rules_first_match_default_and_non_images(tmp_path):
    doc = {"default": "cxr", "rules": [
        {"model": "liver", "modality": "ct", "body_part": "ABDOMEN|LIVER", "series_description": "venous",
         "heatmap_seg": True},
        {"model": "brain", "modality": "MR"},
    ]}
    r = parse_routing(doc, ["liver", "brain", "cxr"])
    assert r.choose(CT) == ("liver", True)
    assert r.choose(MR) == ("brain", False)
    assert r.choose(CR) == ("cxr", False)  # no rule: the default
    assert r.choose(SR) is None  # our own results are never read again
    assert r.choose({**CT, "description": "arterial"}) == ("cxr", False)  # every pattern must match
    assert r.choose({**CT, "modality": "CTX"}) == ("cxr", False)  # modality matches whole
    no_default = parse_routing({"rules": doc["rules"]}, ["liver", "brain", "cxr"])
    assert no_default.choose(CR) is None


def test_routing_from_yaml_and_errors(tmp_path):
    pytest.importorskip("yaml")
    f = tmp_path / "rules.yaml"
    f.write_text("rules:\n  - model: brain\n    modality: MR\n")
    assert load_routing(f, ["brain", "cxr"]).choose(MR) == ("brain", False)
    assert load_routing(None, ["only"]).choose(CR) == ("only", False)
    with pytest.raises(ConfigError, match="--routing"):
        load_routing(None, ["a", "b"])
    for text, match in [("rules:\n  - model: nope\n", "not one of"), ("rules:\n  - modality: CT\n", "needs a 'model'"),
                        ("rules:\n  - model: brain\n    modality: '('\n", "regular expression"),
                        ("rulez: []\n", "unknown routing keys"), ("rules: [\n", "not valid YAML")]:
        f.write_text(text)
        with pytest.raises(ConfigError, match=match):
            load_routing(f, ["brain", "cxr"])


# -- state --------------------------------------------------------------------------------------------------
def test_state_persists_atomically_and_locks(tmp_path):
    st = WatchState(tmp_path / "s")
    assert st.last_seq == 0
    st.advance(7)
    st.advance(3)  # never backwards
    key = f"{study_key('1.2.3.4')}:m@1"
    st.mark_failed(key, "NetworkError: boom", 5)
    st.mark_done(key, model="m@1")
    with pytest.raises(ConfigError, match="another watcher"):
        WatchState(tmp_path / "s")
    st.close()
    again = WatchState(tmp_path / "s")
    assert again.last_seq == 7 and again.is_done(key) and not again.data["failed"]
    assert "1.2.3.4" not in (tmp_path / "s" / "state.json").read_text()  # no identifiers in the state
    again.close()
    (tmp_path / "s" / "state.json").write_text("{broken")
    with pytest.raises(ConfigError, match="unreadable"):
        WatchState(tmp_path / "s")


# -- the watch loop, with a fake Orthanc ----------------------------------------------------------------------
class FakeOrthanc:
    """A change feed of `n` stable studies (ids s1..sn; seq 2k = NewSeries noise, 2k+1 = StableStudy)."""

    def __init__(self, n=3, fail=None, feed_down=0):
        self.feed = []
        for k in range(1, n + 1):
            self.feed.append({"Seq": 2 * k, "ChangeType": "NewSeries", "ID": f"x{k}", "ResourceType": "Series"})
            self.feed.append({"Seq": 2 * k + 1, "ChangeType": "StableStudy", "ID": f"s{k}", "ResourceType": "Study"})
        self.fail = fail or {}
        self.feed_down = feed_down
        self.stored = []
        self.sr = {}
        self.deleted = set()
        self.n_series = 1
        self.broken = set()  # series whose first store fails

    def changes(self, since, limit=2):
        if self.feed_down:
            self.feed_down -= 1
            raise NetworkError("Orthanc change feed: ConnectionError")
        page = [c for c in self.feed if c["Seq"] > since][:limit]
        last = page[-1]["Seq"] if page else (self.feed[-1]["Seq"] if self.feed else 0)
        return {"Changes": page, "Done": not [c for c in self.feed if c["Seq"] > last], "Last": last}

    def study_uid(self, oid):
        from meddx.pacs.client import NotFound

        if oid in self.deleted:
            raise NotFound("Orthanc study lookup: HTTP 404")
        if self.fail.get(oid, 0):
            self.fail[oid] -= 1
            raise NetworkError("Orthanc study lookup: HTTP 500")
        return f"1.2.999.{oid}"

    def series(self, uid):
        out = [{"uid": f"{uid}.{k}", "modality": "CT", "body_part": "", "description": ""}
               for k in range(1, self.n_series + 1)]
        out += [{"uid": uid + ".9", "modality": "SR", "body_part": "", "description": d} for d in self.sr.get(uid, [])]
        return out


def FakeModel():
    from pathlib import Path

    from meddx.pacs.derive import Model

    return Model(name="m", version="1", predictor=None, run_dir=Path("."))


def make_watcher(tmp_path, client, **kw):
    from meddx.pacs.routing import Routing

    w = Watcher(client, {"m": FakeModel()}, Routing([], "m"), WatchState(tmp_path / "state"), backoff_s=0.01,
                sleep=lambda s: None, **kw)
    calls = []

    def process_series(model, study_uid, series, heatmap_seg, orthanc_id):
        if series["uid"] in client.broken:
            client.broken.discard(series["uid"])
            raise NetworkError("Orthanc STOW-RS store: HTTP 503")
        calls.append(orthanc_id if client.n_series == 1 else series["uid"])
        client.sr.setdefault(study_uid, []).append(model.sr_description(series["uid"]))
        return "finding", ["SR"]

    w.process_series = process_series
    return w, calls


def test_watch_processes_each_stable_study_once_and_resumes(tmp_path):
    client = FakeOrthanc(3)
    w, calls = make_watcher(tmp_path, client)
    stats = w.run(once=True)
    assert calls == ["s1", "s2", "s3"] and stats["processed"] == 3
    assert w.state.last_seq == 7
    # the same study becoming stable again (our own SR arrived, or a second upload) is skipped
    client.feed.append({"Seq": 8, "ChangeType": "StableStudy", "ID": "s2", "ResourceType": "Study"})
    assert w.run(once=True)["skipped"] == 1 and calls == ["s1", "s2", "s3"]
    w.state.close()
    # a new watcher on the same state resumes after change 8
    client.feed.append({"Seq": 9, "ChangeType": "StableStudy", "ID": "s4", "ResourceType": "Study"})
    w2, calls2 = make_watcher(tmp_path, client)
    w2.run(once=True)
    assert calls2 == ["s4"] and w2.state.last_seq == 9
    w2.state.close()


def test_killed_watcher_resumes_from_last_finished_change(tmp_path):
    client = FakeOrthanc(3)
    w, calls = make_watcher(tmp_path, client)
    assert oct(w.work.stat().st_mode & 0o777) == "0o700"
    (w.work / "series-left-by-a-killed-watcher").mkdir()
    real = w.process_series

    def die_on_s2(model, study_uid, series, heatmap_seg, orthanc_id):
        if orthanc_id == "s2":
            raise KeyboardInterrupt  # killed in the middle of study 2
        return real(model, study_uid, series, heatmap_seg, orthanc_id)

    w.process_series = die_on_s2
    with pytest.raises(KeyboardInterrupt):
        w.run(once=True)
    assert w.state.last_seq == 4 and calls == ["s1"]  # change 5 (s2 stable) was not finished
    w.state.close()
    w2, calls2 = make_watcher(tmp_path, client)
    assert not list(w2.work.iterdir())  # the killed watcher's temporary series are gone
    w2.run(once=True)
    assert calls2 == ["s2", "s3"] and w2.state.last_seq == 7
    w2.state.close()


def test_result_already_in_orthanc_is_not_redone(tmp_path):
    client = FakeOrthanc(1)
    client.sr["1.2.999.s1"] = [FakeModel().sr_description("1.2.999.s1.1")]  # e.g. the state folder was lost
    w, calls = make_watcher(tmp_path, client)
    assert w.run(once=True)["skipped"] == 1 and calls == []
    assert w.state.data["done"]  # and recorded
    w.state.close()


def test_failures_are_retried_then_recorded_never_dropped(tmp_path, caplog):
    client = FakeOrthanc(2, fail={"s1": 2, "s2": 99}, feed_down=2)
    w, calls = make_watcher(tmp_path, client, max_attempts=3, results=tmp_path / "results")
    with caplog.at_level("WARNING", logger="meddx.pacs.watch"):
        stats = w.run(once=True)
    assert calls == ["s1"]  # s1 succeeded on its third attempt
    assert stats == {"processed": 1, "skipped": 0, "failed": 1}
    failed = w.state.data["failed"]
    assert list(failed) == ["orthanc:s2"] and failed["orthanc:s2"]["attempts"] == 3
    assert "HTTP 500" in failed["orthanc:s2"]["error"]
    text = caplog.text
    assert "change feed unavailable" in text and "attempt 1/3 failed" in text and "recorded as failed" in text
    assert "1.2.999" not in text  # no Study UIDs in logs
    w.state.close()
    from meddx.app.results import list_results

    (listed,) = list_results(tmp_path / "results")  # the viewer's worklist shows the failure
    assert listed["status"] == "failed" and listed["orthanc_study"] == "s2"


def test_multi_series_study_retry_redoes_only_the_unfinished_series(tmp_path):
    client = FakeOrthanc(1)
    client.n_series = 3
    client.broken = {"1.2.999.s1.2"}
    w, calls = make_watcher(tmp_path, client)
    assert w.run(once=True) == {"processed": 1, "skipped": 0, "failed": 0}
    # series 1 stored, series 2 failed once, the retry did series 2 and 3 only: one SR per series
    assert calls == ["1.2.999.s1.1", "1.2.999.s1.2", "1.2.999.s1.3"]
    assert len(set(client.sr["1.2.999.s1"])) == 3
    w.state.close()


def test_series_added_to_a_processed_study_is_read(tmp_path):
    client = FakeOrthanc(1)
    w, calls = make_watcher(tmp_path, client)
    w.run(once=True)
    client.n_series = 2  # a second series arrives; the study becomes stable again
    client.feed.append({"Seq": 4, "ChangeType": "StableStudy", "ID": "s1", "ResourceType": "Study"})
    assert w.run(once=True)["processed"] == 2
    assert calls == ["s1", "1.2.999.s1.2"]
    w.state.close()


def test_study_deleted_before_processing_is_skipped(tmp_path):
    client = FakeOrthanc(2)
    client.deleted.add("s1")
    w, calls = make_watcher(tmp_path, client)
    assert w.run(once=True) == {"processed": 1, "skipped": 1, "failed": 0} and calls == ["s2"]
    w.state.close()


def test_feed_down_in_once_mode_gives_up(tmp_path):
    w, _ = make_watcher(tmp_path, FakeOrthanc(1, feed_down=10), max_attempts=2)
    with pytest.raises(NetworkError):
        w.run(once=True)
    w.state.close()


def test_build_watcher_checks_options_before_loading_models(tmp_path, monkeypatch):
    from meddx.pacs.watch import build_watcher

    monkeypatch.delenv("MEDDX_ORTHANC_CREDENTIALS", raising=False)
    state = tmp_path / "s"
    with pytest.raises(ConfigError, match="http"):
        build_watcher("ftp://pacs", ["RUN"], state=state)
    with pytest.raises(ConfigError, match="password"):
        build_watcher("http://user:pw@127.0.0.1:8042", ["RUN"], state=state)
    with pytest.raises(InputError, match="cannot read credentials"):
        build_watcher("http://127.0.0.1:8042", ["RUN"], credentials=tmp_path / "missing", state=state)
    with pytest.raises(InputError):
        build_watcher("http://127.0.0.1:8042", [tmp_path / "not-a-run"], state=state)
    WatchState(state).close()  # the lock was released on the error
