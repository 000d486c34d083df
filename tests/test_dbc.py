"""canx.dbc: DBC decoding against cantools itself (the peer), J1939 PGN
matching, the sample DBC, load errors."""

from __future__ import annotations

import itertools
import os
import struct
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

cantools = pytest.importorskip("cantools", reason="cantools not installed (pip install canx[dbc])")

import canx.dbc as dbc  # noqa: E402
from canx import megasquirt  # noqa: E402

DATA = Path(__file__).parent / "data"
TEST_DBC = DATA / "j1939_test.dbc"
_chans = itertools.count()


@pytest.fixture(scope="module")
def sample() -> dbc.Database:
    return dbc.load(dbc.SAMPLE)


@pytest.fixture(scope="module")
def testdb() -> dbc.Database:
    return dbc.load(TEST_DBC)


def peer_decode(path: object, frame_id: int, data: bytes) -> dict:
    """cantools on its own, values as canx gives them (choices as str)."""
    db = cantools.database.load_file(str(path))
    raw = db.get_message_by_frame_id(frame_id).decode(data, allow_excess=True)
    return {k: (v if isinstance(v, (int, float)) else str(v)) for k, v in raw.items()}


# ------------------------------------------------------------ sample DBC

def test_sample_is_package_data_and_loads(sample: dbc.Database) -> None:
    assert os.path.isfile(dbc.SAMPLE)
    assert sample.message_names == ["EEC1", "ET1", "DM1", "MS_Dash0", "MS_Dash1", "MS_Dash2", "MS_Dash3", "MS_Dash4"]
    assert sample.signal_names()["EngineSpeed"] == "EEC1"
    assert len(sample) == 8 and list(sample) == sample.message_names


def test_eec1_engine_speed_spn190(sample: dbc.Database) -> None:
    # SPN 190: bytes 4-5, 0.125 rpm/bit (docs/protocols/j1939.md): 1800 rpm = 14400 = 0x3840
    data = bytes([0xF0, 0x7D, 0x7D, 0x40, 0x38, 0x00, 0xFF, 0x7D])
    d = sample.decode(0x0CF00400, data, is_extended_id=True)
    assert d is not None
    assert d.name == "EEC1" and d.pgn == 61444 and d.frame_id == 0x0CF00400 and d.is_extended_id
    assert d.signals["EngineSpeed"] == 1800.0 and d.units["EngineSpeed"] == "rpm"
    assert d.signals["ActualEnginePercentTorque"] == 0 and d.units["ActualEnginePercentTorque"] == "%"
    assert str(d).startswith("EEC1 EngineTorqueMode=0 DriversDemandEnginePercentTorque=0 %")
    assert "EngineSpeed=1800.0 rpm" in str(d)
    # the project's own EEC1 encoder agrees
    from canx import j1939
    enc = j1939.encode_eec1(1234.5)
    assert sample.decode_pgn(j1939.PGN_EEC1, enc).signals["EngineSpeed"] == pytest.approx(1234.5)


def test_et1_coolant_spn110(sample: dbc.Database) -> None:
    from canx import j1939
    d = sample.decode_pgn(65262, j1939.encode_et1(90, 45))
    assert d is not None and d.name == "ET1"
    assert d.signals["EngineCoolantTemperature"] == 90 and d.units["EngineCoolantTemperature"] == "degC"
    assert d.signals["EngineFuelTemperature1"] == 45


def test_dm1_value_table_gives_str(sample: dbc.Database) -> None:
    d = sample.decode(0x18FECA00, bytes([0x40, 0xFF, 0xBE, 0x00, 0x04, 0x01, 0xFF, 0xFF]), True)
    assert d is not None
    assert d.signals["MalfunctionIndicatorLampStatus"] == "On"
    assert d.signals["ProtectLampStatus"] == "Off"
    assert d.signals["DTC1_SPN_Low"] == 190 and d.signals["DTC1_FMI"] == 4 and d.signals["DTC1_OccurrenceCount"] == 1


MS_NAMES = {
    "map_kpa": "MAP", "rpm": "RPM", "clt_degF": "CLT", "tps_pct": "TPS",
    "pw1_us": "PW1", "pw2_us": "PW2", "mat_degF": "MAT", "adv_deg": "ADV",
    "afrtgt1": "AFRTarget1", "afr1": "AFR1", "egocor1_pct": "EGOCorrection1", "egt1_degF": "EGT1",
    "pwseq1_us": "PWSeq1", "batt_v": "BatteryVoltage", "sensors1": "Sensors1", "sensors2": "Sensors2",
    "knk_rtd_deg": "KnockRetard", "vss1_mps": "VSS1", "tc_retard_deg": "TCRetard",
    "launch_timing_deg": "LaunchTiming",
}


@settings(max_examples=50, deadline=None)
@given(st.binary(min_size=40, max_size=40))
def test_megasquirt_dash_matches_canx_megasquirt(sample: dbc.Database, raw: bytes) -> None:
    """The DBC's dash frames decode like canx.megasquirt's field table (the
    firmware document's table, implemented separately in the Rust core)."""
    for i in range(5):
        data = raw[8 * i:8 * i + 8]
        d = sample.decode(megasquirt.DASH_BASE + i, data, is_extended_id=False)
        assert d is not None and d.name == f"MS_Dash{i}" and d.pgn is None
        for key, field in megasquirt.DASH[i].items():
            assert d.signals[MS_NAMES[key]] == pytest.approx(field.decode(data)), key


def test_megasquirt_dash_values(sample: dbc.Database) -> None:
    frames = megasquirt.encode_dash({"rpm": 3000, "map_kpa": 95.5, "clt_degF": 180.2, "batt_v": 13.8})
    out = {}
    for m in frames:
        d = sample.decode(m.id, m.data, False)
        assert d is not None
        out.update(d.signals)
    assert out["RPM"] == 3000 and out["MAP"] == pytest.approx(95.5) and out["CLT"] == pytest.approx(180.2)
    assert out["BatteryVoltage"] == pytest.approx(13.8)


# ------------------------------------------------------------ vs cantools

@settings(max_examples=100, deadline=None)
@given(st.sampled_from([0x0CF00400, 0x18FEEE00, 0x18FECA00, 0x5E8, 0x5E9, 0x5EA, 0x5EB, 0x5EC]),
       st.binary(min_size=8, max_size=8))
def test_decode_equals_cantools(sample: dbc.Database, frame_id: int, data: bytes) -> None:
    d = sample.decode(frame_id, data, is_extended_id=frame_id > 0x7FF)
    assert d is not None
    assert d.signals == peer_decode(dbc.SAMPLE, frame_id, data)


@settings(max_examples=50, deadline=None)
@given(st.binary(min_size=20, max_size=1785))
def test_decode_pgn_long_payload_equals_cantools(testdb: dbc.Database, data: bytes) -> None:
    d = testdb.decode_pgn(0xFF10, data)
    assert d is not None and d.name == "BigPropB"
    assert d.signals == peer_decode(TEST_DBC, 0x18FF1000, data[:20])
    assert d.signals["Pressure"] == struct.unpack_from("<H", data, 10)[0] * 0.5
    assert d.signals["Tail"] == struct.unpack_from("<b", data, 19)[0]


# ------------------------------------------------------------ J1939 PGN matching

@pytest.mark.parametrize("priority", [0, 3, 6, 7])
@pytest.mark.parametrize("sa", [0x00, 0x17, 0x80, 0xFE])
def test_j1939_matches_on_pgn_any_priority_and_sa(sample: dbc.Database, priority: int, sa: int) -> None:
    data = bytes([0xF0, 0x7D, 0x7D, 0x40, 0x38, 0x00, 0xFF, 0x7D])
    can_id = (priority << 26) | (0xF004 << 8) | sa
    d = sample.decode(can_id, data, is_extended_id=True)
    assert d is not None and d.name == "EEC1" and d.source_address == sa and d.pgn == 61444
    assert d.signals == sample.decode(0x0CF00400, data, True).signals  # type: ignore[union-attr]


@pytest.mark.parametrize("da", [0x00, 0x2A, 0x80, 0xFF])
def test_j1939_pdu1_any_destination(testdb: dbc.Database, da: int) -> None:
    """PropA is written with DA 0x2A; PDU1 matches whatever the DA byte."""
    data = bytes([1, 0x10, 0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF])
    d = testdb.decode((6 << 26) | (0xEF << 16) | (da << 8) | 0x33, data, True)
    assert d is not None and d.name == "PropA" and d.pgn == 0xEF00 and d.signals["Setpoint"] == pytest.approx(1.6)
    d2 = testdb.decode_pgn(0xEF00 | da, data)
    assert d2 is not None and d2.name == "PropA" and d2.source_address is None


def test_pdu2_group_extension_is_part_of_the_pgn(testdb: dbc.Database) -> None:
    assert testdb.decode_pgn(0xFF11, bytes(20)) is None
    assert testdb.decode(0x18FF1100, bytes(20), True) is None


def test_non_j1939_extended_is_exact_for_decode(testdb: dbc.Database) -> None:
    assert testdb.decode(0x1ABCDE01, bytes(4), True) is not None
    assert testdb.decode(0x1ABCDE02, bytes(4), True) is None       # not J1939PG: exact id only
    d = testdb.decode_pgn(dbc.pgn_of(0x1ABCDE01), bytes(4))          # decode_pgn: any 29-bit message
    assert d is not None and d.name == "PlainExtended"


def test_standard_and_extended_ids_are_kept_apart(sample: dbc.Database) -> None:
    assert sample.decode(0x5E8, bytes(8), is_extended_id=True) is None
    assert sample.decode(0x5E8, bytes(8), is_extended_id=False) is not None
    assert sample.decode(0x5E8, bytes(8)) is not None                 # None: guessed from the value
    assert sample.decode(0x123, bytes(8), False) is None
    assert sample.decode(0x18FEEF00, bytes(8), True) is None


def test_pgn_of() -> None:
    assert dbc.pgn_of(0x0CF00417) == 0xF004
    assert dbc.pgn_of(0x18EA2A17) == 0xEA00
    assert dbc.pgn_of(0x19FEEE00) == 0x1FEEE       # DP
    assert dbc.pgn_of(0x1BFEEE00) == 0x3FEEE       # EDP + DP
    from canx import j1939
    for can_id in (0x0CF00417, 0x18EA2A17, 0x19FEEE00, 0x18EF0001):
        assert dbc.pgn_of(can_id) == j1939.decode_id(can_id)[1]


# ------------------------------------------------------------ errors

def test_short_data_raises_or_truncates(sample: dbc.Database) -> None:
    with pytest.raises(dbc.DecodeError, match="EEC1") as e:
        sample.decode(0x0CF00400, bytes(3), True)
    assert isinstance(e.value, ValueError) and isinstance(e.value, dbc.CanxError)
    d = sample.decode(0x0CF00400, bytes([0xF0, 0x7D, 0x7D]), True, allow_truncated=True)
    assert d is not None and set(d.signals) == {"EngineTorqueMode", "DriversDemandEnginePercentTorque",
                                                 "ActualEnginePercentTorque"}
    assert sample.decode_pgn(65262, b"", allow_truncated=True) is not None


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no-such.dbc"):
        dbc.load(tmp_path / "no-such.dbc")
    bad = tmp_path / "bad.dbc"
    bad.write_text('VERSION ""\nBO_ 100 X: 8 Y\n SG_ A : 0|8@1+ (1,0 [0|255] "" Y\n')
    with pytest.raises(dbc.DbcError, match=r"bad.dbc.*line 3"):
        dbc.load(bad)
    overlong = tmp_path / "overlong.dbc"
    overlong.write_text('VERSION ""\nBO_ 100 X: 1 Y\n SG_ A : 0|16@1+ (1,0) [0|255] "" Y\n')
    with pytest.raises(dbc.DbcError, match="does not fit"):
        dbc.load(overlong)
    assert dbc.load(overlong, strict=False).message_names == ["X"]
    binary = tmp_path / "binary.dbc"
    binary.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(dbc.DbcError, match="binary.dbc"):
        dbc.load(binary)


def test_missing_cantools_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    for mod in [m for m in sys.modules if m == "cantools" or m.startswith("cantools.")]:
        monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setitem(sys.modules, "cantools", None)
    with pytest.raises(ImportError, match=r"pip install canx\[dbc\]"):
        dbc.load(dbc.SAMPLE)


# ------------------------------------------------------------ J1939 ECU: on_pgn(decode=db), TP payloads

def _wait(pred, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.01)
    return False


@pytest.fixture
def ecus():
    from canx import j1939
    ch = f"virtual:dbc-{next(_chans)}"
    a = j1939.ECU(channel=ch, name=j1939.Name(identity_number=1), address=0x17)
    b = j1939.ECU(channel=ch, name=j1939.Name(identity_number=2), address=0x42)
    assert a.claim_address() == 0x17 and b.claim_address() == 0x42
    yield a, b
    a.close()
    b.close()


def test_on_pgn_decode_single_frames_and_tp(ecus, sample: dbc.Database, testdb: dbc.Database) -> None:
    from canx import j1939
    a, b = ecus
    got: list = []
    plain: list = []
    b.on_pgn(j1939.PGN_EEC1, got.append, decode=sample)
    b.on_pgn(j1939.PGN_DM1, got.append, decode=sample)
    b.on_pgn(0xFF10, got.append, decode=testdb)
    b.on_pgn(0xEF00, got.append, decode=testdb)
    b.on_pgn(j1939.PGN_EEC1, plain.append)                 # existing callers: no decode, decoded None
    a.send_engine_speed(1800)                               # single frame, SA 0x17, priority 3
    a.send_dm1([(190, 3, 1), (110, 0, 2), (175, 1, 5)], malfunction=1)   # 14 bytes by BAM
    big = bytes(range(1, 21)) + bytes(30)                   # 50 bytes, BigPropB is 20: excess is ignored
    a.send_pgn(0xFF10, big).result(10)                      # BAM
    prop = bytes([7, 0x34, 0x12]) + bytes(range(20))        # PDU1 to b by RTS/CTS (23 bytes)
    a.send_pgn(0xEF00, prop, destination=0x42).result(10)
    assert _wait(lambda: len(got) == 4 and len(plain) == 1), (got, plain)
    by = {m.pgn: m for m in got}
    eec1 = by[j1939.PGN_EEC1]
    assert eec1.via == "single" and eec1.decoded is not None and eec1.decoded.name == "EEC1"
    assert eec1.decoded.signals["EngineSpeed"] == 1800.0 and eec1.decoded.source_address == 0x17
    assert eec1.decoded.signals == peer_decode(dbc.SAMPLE, 0x0CF00400, eec1.data)
    assert plain[0].decoded is None and plain[0].data == eec1.data
    dm1 = by[j1939.PGN_DM1]
    assert dm1.via == "tp" and len(dm1.data) == 14 and dm1.decoded is not None
    assert dm1.decoded.signals == peer_decode(dbc.SAMPLE, 0x18FECA00, dm1.data)
    assert dm1.decoded.signals["DTC1_SPN_Low"] == 190 and dm1.decoded.signals["DTC1_FMI"] == 3
    assert dm1.decoded.signals["MalfunctionIndicatorLampStatus"] == "On"
    bp = by[0xFF10]
    assert bp.via == "tp" and bp.data == big and bp.decoded is not None and bp.decoded.name == "BigPropB"
    assert bp.decoded.signals == peer_decode(TEST_DBC, 0x18FF1000, big[:20])
    pa = by[0xEF00]
    assert pa.via == "tp" and pa.destination == 0x42 and pa.decoded is not None
    assert pa.decoded.signals == {"Command": 7, "Setpoint": pytest.approx(0x1234 * 0.1)}
    assert b.callback_errors == 0


def test_on_pgn_decode_pgn_not_in_dbc_and_short_payload(ecus, sample: dbc.Database) -> None:
    from canx import j1939
    a, b = ecus
    got: list = []
    b.on_pgn(None, got.append, decode=sample)
    a.send_pgn(0xFF99, b"\x01\x02")                          # no such PGN in the DBC
    a.send_pgn(j1939.PGN_ET1, b"\x82")                       # 1 byte: coolant only (truncated)
    assert _wait(lambda: {m.pgn for m in got} >= {0xFF99, j1939.PGN_ET1})
    by = {m.pgn: m for m in got}
    assert by[0xFF99].decoded is None
    et1 = by[j1939.PGN_ET1].decoded
    assert et1 is not None and et1.signals == {"EngineCoolantTemperature": 0x82 - 40}
    assert b.callback_errors == 0


def test_messages_stream_decodes(ecus, sample: dbc.Database) -> None:
    from canx import j1939
    a, b = ecus
    with b.messages(j1939.PGN_ET1, timeout=5.0, decode=sample) as stream:
        a.send_coolant_temperature(95, 50)
        m = stream.get(5.0)
    assert m is not None and m.decoded is not None
    assert m.decoded.signals["EngineCoolantTemperature"] == 95 and m.decoded.signals["EngineFuelTemperature1"] == 50


def test_source_address_only_for_j1939(testdb: dbc.Database) -> None:
    d = testdb.decode(0x1ABCDE01, bytes(4), True)
    assert d is not None and d.source_address is None and d.pgn == 0x2BC00


def test_example_script_prints_decoded_signals() -> None:
    import subprocess
    script = Path(__file__).parent.parent / "examples" / "dbc" / "j1939_signals.py"
    r = subprocess.run([sys.executable, str(script), f"virtual:dbc-example-{os.getpid()}"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert [ln.split("EngineSpeed=")[1].split()[0] for ln in lines if "EEC1" in ln] == ["800.0", "1200.0", "1800.0"]
    assert any("ET1 EngineCoolantTemperature=88 degC EngineFuelTemperature1=40 degC" in ln for ln in lines)
    dm1 = [ln for ln in lines if " DM1 " in ln]
    assert len(dm1) == 1 and " tp " in dm1[0] and "AmberWarningLampStatus=On" in dm1[0] and "DTC1_SPN_Low=190" in dm1[0]


def test_j1939_not_available_and_error_ranges(sample: dbc.Database) -> None:
    """J1939-71 ranges (docs/protocols/j1939.md): 1 byte 0xFE error / 0xFF n/a;
    2 bytes 0xFExx error / 0xFFxx n/a. Values stay cantools' scaled ones."""
    data = bytes([0xF0, 0xFE, 0x7D, 0x12, 0xFF, 0xFF, 0xFF, 0xFF])
    d = sample.decode(0x0CF00400, data, True)
    assert d is not None
    assert d.status == {"DriversDemandEnginePercentTorque": "error", "EngineSpeed": "n/a",
                        "SourceAddressOfControllingDevice": "n/a", "EngineDemandPercentTorque": "n/a"}
    assert d.signals == peer_decode(dbc.SAMPLE, 0x0CF00400, data)
    assert "EngineSpeed=n/a " in str(d) and "DriversDemandEnginePercentTorque=error " in str(d)
    assert "ActualEnginePercentTorque=0 %" in str(d) and "EngineTorqueMode=0" in str(d)  # 4-bit: not checked
    et1 = sample.decode_pgn(65262, bytes([0x82, 0xFF, 0x00, 0xFE, 0xFF, 0xFF, 0xFF, 0xFF]))
    assert et1 is not None and et1.status == {"EngineFuelTemperature1": "n/a", "EngineOilTemperature1": "error"}
    assert sample.decode(0x0CF00400, bytes([0xF0, 0x7D, 0x7D, 0x40, 0x38, 0x00, 0xFF, 0x7D]), True).status == {}  # type: ignore[union-attr]
    # 11-bit and non-J1939 messages: never
    assert sample.decode(0x5E8, b"\xff" * 8, False).status == {}  # type: ignore[union-attr]
