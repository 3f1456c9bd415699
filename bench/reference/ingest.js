// Reference for the ingest benchmark: the storage work a callback cannot avoid, and nothing else.
// It parses the JSON body and stores it with one D1 INSERT into its own table (no token check, no
// validation, no idempotency key, no suppression policy, no logging).
const INSERT = "INSERT INTO ref_events (event, email, occurred_at, body) VALUES (?1, ?2, ?3, ?4)";

export default {
	async fetch(request, env) {
		const { pathname } = new URL(request.url);
		if (request.method === "POST" && pathname.startsWith("/v1/callbacks/tencent/")) {
			const body = await request.text();
			const event = JSON.parse(body);
			await env.DB.prepare(INSERT).bind(event.event, event.email, event.timestamp, body).run();
			return Response.json({ ok: true, received: 1 });
		}
		if (pathname === "/__setup") {
			// Created by the harness before loading, never per request.
			await env.DB.prepare(
				`CREATE TABLE IF NOT EXISTS ref_events (seq INTEGER PRIMARY KEY, event TEXT NOT NULL,
				email TEXT NOT NULL, occurred_at INTEGER NOT NULL, body TEXT NOT NULL) STRICT`,
			).run();
			return Response.json({ ok: true });
		}
		if (pathname === "/healthz") return Response.json({ ok: true });
		return new Response("not found", { status: 404 });
	},
};
