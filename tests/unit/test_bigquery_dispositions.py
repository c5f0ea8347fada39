"""Write dispositions of an export to BigQuery (dicomstore.core.bigquery_dispositions)."""

from __future__ import annotations

import pytest

from dicomstore.core.bigquery_dispositions import WritePlan, check_destination, write_plan
from dicomstore.core.errors import FailedPrecondition
from dicomstore.core.model import WriteDisposition

pytestmark = pytest.mark.google_behaviour("bigquery-write-disposition")

W = WriteDisposition
EMPTY = WritePlan(empty_only=True)
TRUNCATE = WritePlan(truncate=True)
APPEND = WritePlan()


@pytest.mark.parametrize(
    ("disposition", "force", "plan"),
    [
        (W.WRITE_DISPOSITION_UNSPECIFIED, False, EMPTY),
        (W.WRITE_DISPOSITION_UNSPECIFIED, True, TRUNCATE),
        (W.WRITE_EMPTY, False, EMPTY),
        (W.WRITE_EMPTY, True, EMPTY),  # force is ignored once a disposition is set
        (W.WRITE_TRUNCATE, False, TRUNCATE),
        (W.WRITE_TRUNCATE, True, TRUNCATE),
        (W.WRITE_APPEND, False, APPEND),
        (W.WRITE_APPEND, True, APPEND),
    ],
)
def test_write_plan_of_disposition_and_force(
    disposition: WriteDisposition, force: bool, plan: WritePlan
) -> None:
    assert write_plan(disposition, force) == plan


def test_write_empty_refuses_a_table_with_rows() -> None:
    with pytest.raises(FailedPrecondition) as caught:
        check_destination(EMPTY, empty=False, table_uri="bq://p.d.t")
    assert "bq://p.d.t is not empty" in caught.value.message
    assert caught.value.field == "bigquery_destination.write_disposition"


@pytest.mark.parametrize("plan", [EMPTY, TRUNCATE, APPEND])
def test_every_plan_accepts_an_empty_or_missing_table(plan: WritePlan) -> None:
    check_destination(plan, empty=True, table_uri="bq://p.d.t")


@pytest.mark.parametrize("plan", [TRUNCATE, APPEND])
def test_truncate_and_append_accept_a_table_with_rows(plan: WritePlan) -> None:
    check_destination(plan, empty=False, table_uri="bq://p.d.t")
