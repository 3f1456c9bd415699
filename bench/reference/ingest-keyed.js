// Second reference for the ingest benchmark, reported beside the first and held to no target: the
// storage this product cannot do without, and nothing else. Like ingest.js it parses the body and
// makes one D1 INSERT per request, but the row also carries an idempotency key (the first 128 bits
// of the body's SHA-256, skipped on conflict) and the indexes that `GET /v1/events` filters on,
// as migrations/0001_init.sql defines them for the Worker. No token check, no validation, no
// suppression policy, no KV, no logging.
const INSERT = `INSERT INTO ref_events (id, event, email, bulk_id, message_id, occurred_at, body)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (id) DO NOTHING`;

const SCHEMA = [
	`CREATE TABLE IF NOT EXISTS ref_events (seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE,
	event TEXT NOT NULL, email TEXT NOT NULL, bulk_id TEXT, message_id TEXT,
	occurred_at INTEGER NOT NULL, body TEXT NOT NULL) STRICT`,
	"CREATE INDEX IF NOT EXISTS ref_by_email ON ref_events (email, occurred_at)",
	"CREATE INDEX IF NOT EXISTS ref_by_time ON ref_events (occurred_at)",
	"CREATE INDEX IF NOT EXISTS ref_by_bulk_id ON ref_events (bulk_id) WHERE bulk_id IS NOT NULL",
	"CREATE INDEX IF NOT EXISTS ref_by_message_id ON ref_events (message_id) WHERE message_id IS NOT NULL",
];

const encoder = new TextEncoder();

async function key(body) {
	const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", encoder.encode(body)));
	let hex = "";
	for (let i = 0; i < 16; i++) hex += digest[i].toString(16).padStart(2, "0");
	return hex;
}

export default {
	async fetch(request, env) {
		const { pathname } = new URL(request.url);
		if (request.method === "POST" && pathname.startsWith("/v1/callbacks/tencent/")) {
			const body = await request.text();
			const event = JSON.parse(body);
			await env.DB.prepare(INSERT)
				.bind(
					await key(body),
					event.event,
					event.email,
					event.bulkId || null,
					event.messageId || null,
					event.timestamp,
					body,
				)
				.run();
			return Response.json({ ok: true, received: 1 });
		}
		if (pathname === "/__setup") {
			// Created by the harness before loading, never per request.
			await env.DB.batch(SCHEMA.map((sql) => env.DB.prepare(sql)));
			return Response.json({ ok: true });
		}
		if (pathname === "/healthz") return Response.json({ ok: true });
		return new Response("not found", { status: 404 });
	},
};
