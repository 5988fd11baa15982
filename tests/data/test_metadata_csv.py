"""metadata.csv as people write it: bad bytes and repeated columns are refused by line, a spreadsheet's
UTF-8 with a byte order mark reads."""


import pytest

from nmflowgan.data.folders import read_metadata
from nmflowgan.errors import DataError

# ---- 1 and 8: tiles --------------------------------------------------------------------------------------


def _metadata(tmp_path, content: bytes):
    (tmp_path / "metadata.csv").write_bytes(content)
    return tmp_path / "metadata.csv"


def test_a_nul_byte_or_a_latin1_byte_is_a_clear_error(tmp_path):
    path = _metadata(tmp_path, b"clean,noisy,camera,iso\nc\x00.png,n.png,S6,100\n")
    with pytest.raises(DataError, match=r"metadata.csv(:2: the path .* contains a NUL byte|: malformed CSV)"):
        read_metadata(path)
    path = _metadata(tmp_path, b"clean,noisy,camera,iso\nc\xe9.png,n.png,S6,100\n")
    with pytest.raises(DataError, match="metadata.csv: not UTF-8 text"):
        read_metadata(path)
    path = _metadata(tmp_path, b"clean,noisy,camera,is\xf6\n")
    with pytest.raises(DataError, match="metadata.csv: not UTF-8 text"):
        read_metadata(path)


def test_a_repeated_column_is_refused(tmp_path):
    path = _metadata(tmp_path, b"clean,noisy,camera,iso,iso\nc.png,n.png,S6,100,3200\n")
    with pytest.raises(DataError, match="metadata.csv: the header names iso more than once"):
        read_metadata(path)


def test_a_spreadsheets_utf8_csv_with_a_byte_order_mark_reads(tmp_path):
    path = _metadata(tmp_path, "\ufeffclean,noisy,camera,iso\nc.png,n.png,S6,100\n".encode())
    [record] = read_metadata(path)
    assert record.clean == (tmp_path / "c.png").resolve() and record.iso == 100
