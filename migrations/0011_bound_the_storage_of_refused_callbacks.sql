-- The bytes that refused callbacks take in D1, as one running total kept by triggers in the
-- transaction of every change, so that a refusal learns whether the table is full by reading one
-- row. Without a bound, anyone who learns the callback token (it crosses the internet in clear on
-- port 8080) can fill D1 with refused bodies, and then no callback is stored at all. Past
-- MAX_REJECTED_MIB a refusal is not recorded and is answered 503 with Retry-After, so that Tencent
-- sends it again later.
-- A record takes its body, message, issues and content type, and about 200 bytes more: its id,
-- times, status and code, and its two index entries (an empty body's record grew the local
-- database by 193 bytes), so that a flood of the smallest refusals is counted as what it takes.
ALTER TABLE rejected_callbacks ADD COLUMN kept_bytes INTEGER GENERATED ALWAYS AS (
  200 + length(body) + length(CAST(message AS BLOB)) + coalesce(length(CAST(issues AS BLOB)), 0)
    + coalesce(length(CAST(content_type AS BLOB)), 0)
) VIRTUAL;

CREATE TABLE rejected_storage (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  bytes INTEGER NOT NULL
) STRICT;

INSERT INTO rejected_storage (id, bytes)
SELECT 1, coalesce(sum(kept_bytes), 0) FROM rejected_callbacks;

CREATE TRIGGER rejected_storage_inserted AFTER INSERT ON rejected_callbacks BEGIN
  INSERT INTO rejected_storage (id, bytes) VALUES (1, NEW.kept_bytes)
  ON CONFLICT (id) DO UPDATE SET bytes = bytes + excluded.bytes;
END;

CREATE TRIGGER rejected_storage_deleted AFTER DELETE ON rejected_callbacks BEGIN
  UPDATE rejected_storage SET bytes = bytes - OLD.kept_bytes WHERE id = 1;
END;

CREATE TRIGGER rejected_storage_updated AFTER UPDATE OF body, message, issues, content_type
ON rejected_callbacks BEGIN
  UPDATE rejected_storage SET bytes = bytes + NEW.kept_bytes - OLD.kept_bytes WHERE id = 1;
END;
