// Reference for the lookup and check benchmarks: the KV reads a lookup cannot avoid, and nothing
// else (no token check, no address normalisation, no entry filtering, no logging).
const PREFIX = "s:";
const BATCH = 100; // KV bulk get takes at most 100 keys

export default {
	async fetch(request, env) {
		const { pathname } = new URL(request.url);
		if (request.method === "GET" && pathname.startsWith("/v1/suppressions/")) {
			// One KV get, answered as JSON.
			const email = decodeURIComponent(pathname.slice("/v1/suppressions/".length));
			const value = await env.KV.get(PREFIX + email, "text");
			const entries = value === null ? [] : JSON.parse(value);
			return Response.json({ email, suppressed: entries.length > 0, entries });
		}
		if (request.method === "POST" && pathname === "/v1/suppressions/check") {
			// Ten 100-key bulk gets in parallel for 1000 addresses.
			const { emails } = await request.json();
			const batches = [];
			for (let i = 0; i < emails.length; i += BATCH) batches.push(emails.slice(i, i + BATCH));
			const maps = await Promise.all(
				batches.map((batch) =>
					env.KV.get(
						batch.map((email) => PREFIX + email),
						"text",
					),
				),
			);
			const results = batches.flatMap((batch, i) =>
				batch.map((email) => {
					const value = maps[i].get(PREFIX + email);
					return { email, suppressed: value != null };
				}),
			);
			return Response.json({ results });
		}
		if (request.method === "POST" && pathname === "/__seed") {
			// The harness seeds the same keys and values that the Worker under test holds.
			const entries = await request.json();
			await Promise.all(Object.entries(entries).map(([key, value]) => env.KV.put(key, value)));
			return Response.json({ ok: true, seeded: Object.keys(entries).length });
		}
		if (pathname === "/healthz") return Response.json({ ok: true });
		return new Response("not found", { status: 404 });
	},
};
