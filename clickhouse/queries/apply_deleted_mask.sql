-- A projection keeps the rows a lightweight DELETE masked until its part is merged;
-- this rewrites the masked parts of the table and their projections (clickhouse/deletion.py).
ALTER TABLE {table:Identifier} APPLY DELETED MASK
