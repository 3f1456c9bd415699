-- Events as received from Tencent Cloud SES, one row per distinct event.
-- `id` is the idempotency key (SHA-256 of the canonical JSON of the received object, 128 bits in
-- hex): a redelivery hits the UNIQUE constraint and is skipped by ON CONFLICT DO NOTHING.
-- `seq` orders rows that share a second; indexes carry it for free as the rowid.
CREATE TABLE events (
  seq INTEGER PRIMARY KEY,
  id TEXT NOT NULL UNIQUE,
  event TEXT NOT NULL,
  email TEXT NOT NULL,
  bulk_id TEXT,
  message_id TEXT,
  task_id INTEGER,
  template_id INTEGER,
  app_id TEXT,
  from_address TEXT,
  from_domain TEXT,
  bounce_type TEXT,
  reason TEXT,
  link TEXT,
  user_agent TEXT,
  subject TEXT,
  occurred_at INTEGER NOT NULL,
  sent_at INTEGER,
  received_at INTEGER NOT NULL,
  custom TEXT,
  extra TEXT
) STRICT;

CREATE INDEX events_by_email ON events (email, occurred_at);
CREATE INDEX events_by_time ON events (occurred_at);
CREATE INDEX events_by_bulk_id ON events (bulk_id) WHERE bulk_id IS NOT NULL;
CREATE INDEX events_by_message_id ON events (message_id) WHERE message_id IS NOT NULL;

-- Callback requests that were refused (400 or 413), kept so an operator can inspect and replay
-- them. `body` holds at most the first 64 KiB of the raw bytes; `body_bytes` the size received.
CREATE TABLE rejected_callbacks (
  id TEXT PRIMARY KEY,
  received_at INTEGER NOT NULL,
  status INTEGER NOT NULL,
  code TEXT NOT NULL,
  message TEXT NOT NULL,
  issues TEXT,
  content_type TEXT,
  body BLOB NOT NULL,
  body_bytes INTEGER NOT NULL
) STRICT;

CREATE INDEX rejected_callbacks_by_time ON rejected_callbacks (received_at);
