"""MySQL / MariaDB binlog capture (python-mysql-replication over PyMySQL)."""
