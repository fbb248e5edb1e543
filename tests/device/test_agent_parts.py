"""The device agent's parts without a service: frame sources (directory, stream,
callable), its config file (unknown keys, wrong types, missing essentials), an offline
agent over a callable source, and desired config applied between batches."""

from __future__ import annotations

import io
import threading

import numpy as np
import pytest

from edgecl import ConfigError
from edgecl.device import AgentConfig, DeviceAgent, load_agent_config
from edgecl.device._frames import callable_frames, directory_frames, stream_frames


def frames_for_test():
    """A callable frames source (``tests.device.test_agent_parts:frames_for_test``)."""
    rng = np.random.default_rng(0)
    yield rng.random((1, 28, 28), dtype=np.float32)          # one frame
    yield rng.random((5, 1, 28, 28), dtype=np.float32)       # a batch
    yield np.full((2, 1, 28, 28), np.nan, np.float32)        # refused by the runtime


def test_a_stream_of_npy_records_until_eof_and_a_bad_record_ends_it():
    buf = io.BytesIO()
    np.save(buf, np.zeros((1, 4, 4), np.float32))
    np.save(buf, np.ones((3, 1, 4, 4), np.float64))
    good = buf.getvalue()
    out = list(stream_frames(io.BytesIO(good)))
    assert [a.shape for a in out] == [(1, 1, 4, 4), (3, 1, 4, 4)]
    assert all(a.dtype == np.float32 for a in out)
    assert len(list(stream_frames(io.BytesIO(good + b"garbage, not npy")))) == 2
    assert list(stream_frames(io.BytesIO(b""))) == []


def test_a_watched_directory_reads_npy_and_npz_and_sets_bad_files_aside(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((2, 1, 4, 4), np.float32))
    np.savez(tmp_path / "b.npz", images=np.ones((3, 1, 4, 4), np.float32), labels=[1, 2, 3])
    np.savez(tmp_path / "c.npz", x=np.ones((1, 4, 4)), y=np.ones(3))
    np.save(tmp_path / "d.npy", np.zeros((4, 4), np.float32))  # 2-D: not frames
    (tmp_path / "e.npy").write_bytes(b"\x93NUMPY broken")
    (tmp_path / "notes.txt").write_text("ignored")
    stop = threading.Event()
    threading.Timer(1.0, stop.set).start()  # the source runs until stopped
    shapes = [a.shape for a in directory_frames(tmp_path, stop, poll_s=0.01)]
    assert shapes == [(2, 1, 4, 4), (3, 1, 4, 4), (1, 1, 4, 4)]
    assert sorted(p.name for p in (tmp_path / "processed").iterdir()) == ["a.npy", "b.npz",
                                                                          "c.npz"]
    assert sorted(p.name for p in (tmp_path / "rejected").iterdir()) == ["d.npy", "e.npy"]
    assert (tmp_path / "notes.txt").exists()
    with pytest.raises(ConfigError):
        next(directory_frames(tmp_path / "missing", stop))


def test_a_callable_source_needs_module_and_function():
    assert len(list(callable_frames("tests.device.test_agent_parts:frames_for_test"))) == 3
    for spec in ("no_colon", "tests.device.test_agent_parts:missing", "nowhere.at.all:f"):
        with pytest.raises(ConfigError):
            list(callable_frames(spec))


def _write(tmp_path, text):
    path = tmp_path / "device.toml"
    path.write_text(text)
    return path


def test_the_config_file_refuses_typos_wrong_types_and_missing_essentials(tmp_path):
    ok = '[runtime]\nbundle = "b"\n[source]\nkind = "stdin"\n'
    config = load_agent_config(_write(tmp_path, ok), env={})
    assert config.bundle == str(tmp_path / "b") and config.source == "stdin"
    assert load_agent_config(_write(tmp_path, ok + '[cloud]\nserver = "h:1"\nenrollment_key = '
                                    '"k"\npublic_key = "p"\n'), env={}).server == "h:1"
    bad = [ok + "[sampling]\nbudgte = 0.1\n",             # a typo
           ok + "[sampling]\nbudget = \"lots\"\n",         # a wrong type
           ok + "[sampling]\nbudget = 1.5\n",              # impossible
           ok + "[reports]\ninterval_s = 0\n",
           ok + "[runtime]\nthreads = true\n",
           '[source]\nkind = "stdin"\n',                   # no bundle
           '[runtime]\nbundle = "b"\n[source]\nkind = "directory"\n',    # no path
           '[runtime]\nbundle = "b"\n[source]\nkind = "webcam"\n',
           ok + '[cloud]\nserver = "h:1"\n',               # no key, no public key
           "not toml ["]
    for text in bad:
        with pytest.raises(ConfigError):
            load_agent_config(_write(tmp_path, text), env={})
    with pytest.raises(ConfigError):
        load_agent_config(tmp_path / "absent.toml")
    key = load_agent_config(_write(tmp_path, ok + '[cloud]\nserver = "h:1"\npublic_key = "p"\n'),
                            env={"EDGECL_DEVICE_ENROLLMENT_KEY": "from-env"})
    assert key.enrollment_key == "from-env"


def test_an_offline_agent_predicts_samples_and_applies_desired_config(tiny_zoo, tmp_path):
    config = AgentConfig(bundle=str(tiny_zoo.student_bundle), state_dir=str(tmp_path / "s"),
                         source="callable",
                         source_callable="tests.device.test_agent_parts:frames_for_test",
                         budget=0.5)
    agent = DeviceAgent(config)
    try:
        assert agent.run(threading.Event()) == 6
        assert agent.errors == 2  # the NaN batch: counted, not raised
        applied = agent.apply_config({"budget": "0.25", "sampling": "random"})
        assert applied["budget"] == "0.25" and applied["sampling"] == "random"
        assert agent.collector.policy.name == "random"
        kept = agent.apply_config({"sampling": "no-such-policy"})
        assert kept["sampling"] == "random"  # an unknown policy: the current one stays
        assert agent.apply_config({})["budget"] == "0.5"  # empty: the file's values
    finally:
        summary = agent.close()
    assert summary["frames"] == 6 and summary["errors"] == 2
    assert summary["selected"] == summary["outbox_left"] > 0  # offline: kept on disk
