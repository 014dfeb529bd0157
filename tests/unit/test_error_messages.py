"""Error messages built from driver errors: identifiers and fixes in, values and secrets out."""

from __future__ import annotations

import ssl

import pymysql
import pytest

from cdc_sync.errors import PermanentError, TransientError, tls_refusal
from cdc_sync.sinks.sql.errors import classify_mysql_error


@pytest.mark.parametrize(
    ("errno", "text", "want"),
    [
        (1142, "DROP command denied to user 'cdc'@'h' for table `hub`.`cdc_sync_x`",
         "permission denied: DROP on table hub.cdc_sync_x; fix: GRANT DROP ON `hub`.`cdc_sync_x`"),
        (1142, "INSERT command denied to user 'cdc'@'h' for table 'cdc_sync_audit'",
         "permission denied: INSERT on table cdc_sync_audit"),
        (1143, "UPDATE command denied to user 'cdc'@'h' for column 'phone' in table 'c'",
         "UPDATE (phone) on table c"),
    ],
)  # fmt: skip
def test_a_refused_grant_names_the_command_and_the_table(errno: int, text: str, want: str) -> None:
    err = classify_mysql_error(pymysql.err.OperationalError(errno, text), "target")
    assert isinstance(err, PermanentError) and want in str(err)
    assert "'cdc'@'h'" not in str(err)


def test_a_refused_certificate_is_found_anywhere_in_the_chain() -> None:
    cause = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify")
    outer = pymysql.err.OperationalError(2003, "Can't connect to MySQL server on 'db'")
    outer.__cause__ = cause
    assert tls_refusal(outer) is not None
    err = classify_mysql_error(outer, "target")
    assert isinstance(err, PermanentError) and "fix the DSN's sslrootcert / ssl_ca" in str(err)
    # a dropped TLS connection stays transient
    lost = pymysql.err.OperationalError(2013, "Lost connection to MySQL server (SSL SYSCALL)")
    assert isinstance(classify_mysql_error(lost, "target"), TransientError)
