"""Reading local data files as people save them (finetune/tasks/formats.py): CSV with ``;``, tab or ``|``,
quoted or GLUE-style TSV, Excel workbooks, and one line for a file that is not UTF-8."""

import csv
import logging
from pathlib import Path
from typing import Dict, List

import pytest

from finetune.errors import FinetuneError
from finetune.tasks.formats import read_local, reader

KEY = "task.data_files.train"


def write_rows(path: Path, rows: List[Dict], delimiter: str = ",", quoting: int = csv.QUOTE_MINIMAL) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter=delimiter, quoting=quoting)
        writer.writeheader()
        writer.writerows(rows)
    return path


def read(path: Path, **options):
    return read_local(path, KEY, "train", **options)


def refusal(path: Path, **options) -> str:
    with pytest.raises(FinetuneError) as error:
        read(path, **options)
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"{KEY}: ")
    return message


def test_semicolon_csv_is_read_with_its_separator(tmp_path, caplog):
    rows = [
        {"text": "prix en hausse, fort", "label": "Business"},
        {"text": "match nul", "label": "Sports"},
        {"text": '"guillemets"; dedans', "label": "World"},
    ]
    path = write_rows(tmp_path / "train.csv", rows, delimiter=";")
    with caplog.at_level(logging.INFO, logger="finetune.tasks.formats"):
        ds = read(path)
    assert ds.column_names == ["text", "label"]
    assert ds["text"][:] == [r["text"] for r in rows] and ds["label"][:] == ["Business", "Sports", "World"]
    assert "';'-separated" in caplog.text


def test_semicolon_csv_from_excel_with_a_byte_order_mark_and_integer_labels(tmp_path):
    path = tmp_path / "train.csv"
    path.write_bytes("\ufefftexte;label\r\ncafé au lait;1\r\nthé;0\r\n".encode("utf-8"))
    ds = read(path)
    assert ds.column_names == ["texte", "label"]
    assert ds["texte"][:] == ["café au lait", "thé"] and ds["label"][:] == [1, 0]


@pytest.mark.parametrize("delimiter, name", [("\t", "tab"), ("|", "'|'")])
def test_tab_and_pipe_separated_csv(tmp_path, caplog, delimiter, name):
    path = write_rows(tmp_path / "train.csv", [{"text": "a b, c", "label": 1}, {"text": "d", "label": 0}], delimiter)
    with caplog.at_level(logging.INFO, logger="finetune.tasks.formats"):
        ds = read(path)
    assert ds["text"][:] == ["a b, c", "d"] and ds["label"][:] == [1, 0]
    assert f"{name}-separated" in caplog.text


def test_comma_csv_with_semicolons_in_quoted_cells_keeps_the_comma(tmp_path, caplog):
    path = tmp_path / "train.csv"
    path.write_text('text,label\n"one; two; three","a;b"\n"four;",c\n', encoding="utf-8")  # more ; than ,
    with caplog.at_level(logging.INFO, logger="finetune.tasks.formats"):
        ds = read(path)
    assert ds.column_names == ["text", "label"] and ds["text"][:] == ["one; two; three", "four;"]
    assert ds["label"][:] == ["a;b", "c"]
    assert "separated" not in caplog.text  # the default is not announced


def test_headerless_semicolon_csv_with_column_names(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text("bonjour, monde;1\nau revoir;0\n", encoding="utf-8")
    ds = read(path, column_names=["text", "label"], text_fields=["text"])
    assert ds["text"][:] == ["bonjour, monde", "au revoir"] and ds["label"][:] == [1, 0]


def test_quoted_tsv_is_detected(tmp_path):
    rows = [
        {"text": "a tab\there", "label": "yes"},
        {"text": 'a newline\nand a "quote"', "label": "no"},
        {"text": "plain", "label": "yes"},
    ]
    path = write_rows(tmp_path / "train.tsv", rows, delimiter="\t")
    assert path.read_text().count("\n") == 5  # the newline inside a quoted cell
    ds = read(path, quoted=None)
    assert ds.column_names == ["text", "label"]
    assert ds["text"][:] == [r["text"] for r in rows] and ds["label"][:] == ["yes", "no", "yes"]
    assert reader(path, KEY, quoted=None)[1].get("quoting") is None  # quoting on


def test_tsv_quoted_only_where_a_cell_holds_quotes_is_detected(tmp_path):
    """As GoEmotions ships it: no header, and only texts holding a quote are quoted ("" inside)."""
    path = tmp_path / "train.tsv"
    lines = ["plain words\t3\tid1", '"he said ""hi"" twice"\t2,3\tid2', "more words\t0\tid3"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    ds = read(path, quoted=None, column_names=["text", "labels", "id"], text_fields=["text"])
    assert ds["text"][:] == ["plain words", 'he said "hi" twice', "more words"]
    assert ds["labels"][:] == ["3", "2,3", "0"]


def test_quote_all_tsv_is_detected_and_quoted_false_reads_it_as_glue(tmp_path):
    rows = [{"text": "first", "label": "1"}, {"text": "second", "label": "0"}]
    path = write_rows(tmp_path / "train.tsv", rows, delimiter="\t", quoting=csv.QUOTE_ALL)
    ds = read(path, quoted=None)
    assert ds.column_names == ["text", "label"] and ds["text"][:] == ["first", "second"]
    forced = read(path, quoted=False)
    assert forced.column_names == ['"text"', '"label"'] and forced['"text"'][:] == ['"first"', '"second"']


def test_glue_tsv_with_a_stray_quote_is_read_unquoted(tmp_path):
    path = tmp_path / "train.tsv"
    lines = ["index\tsentence\tlabel", '0\the said "hi to me\t1', '1\t"open quote only\t0', "2\tplain\t1"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    ds = read(path, quoted=None)
    assert ds["sentence"][:] == ['he said "hi to me', '"open quote only', "plain"] and ds["label"][:] == [1, 0, 1]
    assert len(read(path, quoted=False)) == 3
    assert "is not valid TSV" in refusal(path, quoted=True)  # quoting on: the stray quotes swallow the rest


def test_glue_tsv_with_whole_quoted_sentences_is_read_unquoted(tmp_path):
    path = tmp_path / "train.tsv"
    path.write_text('index\tsentence\tlabel\n0\t"quoted whole"\t1\n1\tnot\t0\n', encoding="utf-8")
    assert read(path, quoted=None)["sentence"][:] == ['"quoted whole"', "not"]


def test_xlsx_keeps_text_integers_and_na_words(tmp_path):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("openpyxl")
    path = tmp_path / "train.xlsx"
    frame = pd.DataFrame({"text": ["hello world", "NA", "null", "café"], "label": [1, 0, 1, 2]})
    with pd.ExcelWriter(path, engine="openpyxl") as writer:
        frame.to_excel(writer, sheet_name="data", index=False)
        pd.DataFrame({"other": [1]}).to_excel(writer, sheet_name="notes", index=False)
    ds = read(path)
    assert ds.column_names == ["text", "label"] and ds.split == "train"
    assert ds["text"][:] == ["hello world", "NA", "null", "café"] and ds["label"][:] == [1, 0, 1, 2]
    assert ds.features["text"].dtype == "string" and ds.features["label"].dtype == "int64"


def test_xlsx_mixed_column_is_text_and_headerless_sheet_takes_column_names(tmp_path):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("openpyxl")
    mixed = tmp_path / "mixed.xlsx"
    pd.DataFrame({"text": ["words", 42, 3.5], "label": ["a", "b", "a"]}).to_excel(mixed, index=False)
    assert read(mixed)["text"][:] == ["words", "42", "3.5"]
    bare = tmp_path / "bare.xlsx"
    pd.DataFrame([["first text", 1], ["second text", 0]]).to_excel(bare, index=False, header=False)
    ds = read(bare, column_names=["text", "label"], text_fields=["text"])
    assert ds["text"][:] == ["first text", "second text"] and ds["label"][:] == [1, 0]


def test_xlsx_that_is_not_a_workbook_and_without_openpyxl(tmp_path, monkeypatch):
    path = tmp_path / "train.xlsx"
    path.write_bytes(b"PK not really a zip")
    pytest.importorskip("openpyxl")
    assert f"could not read {path} as Excel (.xlsx)" in refusal(path)
    monkeypatch.setitem(__import__("sys").modules, "openpyxl", None)  # as if not installed
    assert refusal(path) == f"{KEY}: reading {path} (Excel) needs openpyxl: pip install 'finetune-encoders[excel]'"


@pytest.mark.parametrize(
    "name, content",
    [
        ("train.csv", 'text,label\n"caf\xe9 au lait",World\n'),
        ("train.csv", "text;label\ncaf\xe9 au lait;World\n"),
        ("train.tsv", 'text\tlabel\n"caf\xe9\tau lait"\tWorld\n'),
        ("train.jsonl", '{"text": "ok", "label": 1}\n{"text": "caf\xe9", "label": 0}\n'),
    ],
)
def test_latin1_files_are_refused_in_one_line(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content.encode("latin-1"))
    message = refusal(path, quoted=None)
    assert f"{path} is not valid UTF-8 (byte b'\\xe9' on line 2" in message
    assert f"iconv -f latin1 -t utf-8 {name} > train.utf8{path.suffix}" in message


@pytest.mark.parametrize("name", ["train.csv", "train.tsv", "train.jsonl"])
def test_utf16_files_are_refused_in_one_line(tmp_path, name):
    path = tmp_path / name
    path.write_bytes("text,label\nhello,1\n".encode("utf-16"))  # with its byte-order mark
    message = refusal(path)
    assert f"{path} is UTF-16 (it starts with the byte-order mark b'\\xff\\xfe'), not UTF-8" in message
    assert f"iconv -f utf-16 -t utf-8 {name} > train.utf8{path.suffix}" in message
    path.write_bytes("text,label\nhello,1\n".encode("utf-16-le"))  # without
    assert "holds NUL bytes" in refusal(path) and "iconv -f utf-16le" in refusal(path)


def test_json_lines_json_and_parquet_are_still_read(tmp_path):
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"text": ["one", "NA"], "label": [1, 0]})
    frame.to_json(tmp_path / "train.jsonl", orient="records", lines=True)
    frame.to_json(tmp_path / "train.json", orient="records")
    frame.to_parquet(tmp_path / "train.parquet", index=False)
    for name in ("train.jsonl", "train.json", "train.parquet"):
        ds = read(tmp_path / name)
        assert ds["text"][:] == ["one", "NA"] and ds["label"][:] == [1, 0], name


def test_unsupported_and_missing_files(tmp_path):
    path = tmp_path / "train.xls"
    path.write_bytes(b"\xd0\xcf\x11\xe0")
    message = refusal(path)
    assert "cannot read '.xls' files" in message and ".xlsx" in message and ".parquet" in message
    assert refusal(tmp_path / "nope.csv") == f"{KEY}: no such file: {tmp_path / 'nope.csv'}"
    (tmp_path / "empty.csv").write_text("text,label\n")
    assert refusal(tmp_path / "empty.csv").endswith("has no rows.")
