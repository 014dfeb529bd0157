"""Error messages built from driver errors: identifiers and fixes in, values and secrets out."""

from __future__ import annotations

import ssl

import psycopg
import pymysql
import pytest

from cdc_sync.errors import PermanentError, TransientError, pg_login_refusal, tls_refusal
from cdc_sync.runtime.classify import classify
from cdc_sync.sinks.sql.errors import classify_db_error, classify_mysql_error


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


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ('connection to server at "h", port 5432 failed: FATAL:  password authentication '
         'failed for user "cdc"', 'password authentication failed for user "cdc"'),
        ('failed: FATAL:  role "nobody" does not exist', 'role "nobody" does not exist'),
        ('failed: FATAL:  database "crm" does not exist', 'database "crm" does not exist'),
        ('failed: FATAL:  no pg_hba.conf entry for host "10.0.0.9", user "cdc", database "crm"',
         'no pg_hba.conf entry for host "10.0.0.9"'),
        ("connection to server failed: fe_sendauth: no password supplied", "no password"),
        ('failed: FATAL:  permission denied for database "crm"', "permission denied"),
        ("failed: FATAL:  the database system is starting up", None),
        ("failed: FATAL:  sorry, too many clients already", None),
        ("failed: Connection refused", None),
    ],
)  # fmt: skip
def test_a_refused_pg_login_is_permanent_other_start_up_failures_are_not(
    text: str, want: str | None
) -> None:
    got = pg_login_refusal(Exception(text))
    err = psycopg.OperationalError(text)
    side = [classify(err, "source"), classify_db_error(err, "hub.t")]
    if want is None:
        assert got is None and all(isinstance(e, TransientError) for e in side)
        return
    assert got is not None and want in got
    for e in side:
        assert isinstance(e, PermanentError) and want in str(e) and "check the user" in str(e)


@pytest.mark.parametrize(
    ("errno", "text", "fix"),
    [
        (1045, "Access denied for user 'cdc'@'10.0.0.9' (using password: YES)", "the password"),
        (1044, "Access denied for user 'cdc'@'%' to database 'hub'", "grant the user"),
        (1049, "Unknown database 'hubb'", "the database of this DSN"),
    ],
)
def test_a_refused_mysql_login_names_user_and_fix(errno: int, text: str, fix: str) -> None:
    err = classify_mysql_error(pymysql.err.OperationalError(errno, text), "target")
    assert isinstance(err, PermanentError) and text in str(err) and fix in str(err)


@pytest.mark.parametrize(
    ("errno", "text"),
    [
        (4025, "CONSTRAINT `name_chk` failed for `hub`.`items`"),  # MariaDB
        (3819, "Check constraint 'name_chk' is violated."),  # MySQL 8
    ],
)
def test_a_mysql_check_refusal_names_its_constraint(errno: int, text: str) -> None:
    err = classify_mysql_error(pymysql.err.IntegrityError(errno, text), "target table t")
    assert getattr(err, "constraint", None) == "name_chk"
    assert "(constraint name_chk)" in str(err) and f"MySQL error {errno}" in str(err)
