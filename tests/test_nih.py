import pandas as pd
import pytest

from cxrgan.data import nih
from cxrgan.errors import UserError
from conftest import nih_rows, write_csv


def test_class_rule_of_the_reference_study():
    f = pd.Series(["No Finding", "Infiltration", "Effusion|Infiltration", "Effusion", "No Finding|Effusion"])
    assert nih.class_labels(f).tolist() == [0, 1, 1, -1, -1]
    assert nih.class_labels(f, finding_only=True).tolist() == [0, 1, -1, -1, -1]
    assert nih.class_labels(f, finding="Effusion").tolist() == [0, -1, 1, 1, 1]


def test_read_csv_and_patient_ids(tmp_path):
    rows = nih_rows(5)
    df = nih.read_csv(write_csv(tmp_path / "Data_Entry_2017.csv", rows))
    assert len(df) == len(rows)
    assert nih.patient_ids(df).tolist() == [r["patient"] for r in rows]
    assert nih.view_mask(df, "PA").tolist() == [r["view"] == "PA" for r in rows]


def test_read_csv_gz_and_find_csv_prefers_v2020(tmp_path):
    rows = nih_rows(3)
    p = write_csv(tmp_path / "Data_Entry_2017_v2020.csv", rows)
    pd.read_csv(p).to_csv(tmp_path / "Data_Entry_2017_v2020.csv.gz", index=False)
    p.unlink()
    write_csv(tmp_path / "Data_Entry_2017.csv", rows[:1])
    found = nih.find_csv(tmp_path)
    assert found.name == "Data_Entry_2017_v2020.csv.gz"
    assert len(nih.read_csv(found)) == len(rows)


def test_missing_columns_is_a_clear_error(tmp_path):
    p = tmp_path / "x.csv"
    p.write_text("Image Index,Labels\na.png,No Finding\n")
    with pytest.raises(UserError, match="missing required column.*Finding Labels"):
        nih.read_csv(p)


def test_patient_id_from_name():
    assert nih.patient_id_from_name("00000013_005.png") == 13
    assert nih.patient_id_from_name("xray.png") == -1
