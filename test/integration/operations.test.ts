import { env } from "cloudflare:workers";
import { beforeEach, describe, expect, it } from "vitest";
import { KV_WRITE_SETTLE_SECONDS } from "../../src/cron/edge-repair";
import { ApiError } from "../../src/errors";
import { listRejected, recordRejected } from "../../src/events/rejected-store";
import { eventKey } from "../../src/tencent/raw";
import {
	call,
	countingKv,
	countRows,
	daysAgo,
	envWithFailingBatch,
	envWithFailingSql,
	getJson,
	lookup,
	parkSweeps,
	postCallback,
	resetDatabase,
	runCron,
	tokens,
} from "../helpers";

type Json = Record<string, unknown>;

function admin(method: string, path: string, body?: unknown): Promise<Response> {
	return call(path, {
		method,
		headers: { authorization: `Bearer ${tokens.admin}` },
		...(body === undefined ? {} : { body: JSON.stringify(body) }),
	});
}

async function rejectedList(query = ""): Promise<{ rejected: Json[]; cursor: string | null }> {
	const response = await getJson(`/v1/rejected${query}`);
	expect(response.status).toBe(200);
	return (await response.json()) as { rejected: Json[]; cursor: string | null };
}

/** A rejected record whose body today's schema accepts, as if the rule that refused it changed. */
async function storeRejected(body: string | Uint8Array, bodyBytes?: number): Promise<string> {
	const bytes = typeof body === "string" ? new TextEncoder().encode(body) : body;
	const id = crypto.randomUUID();
	await env.DB.prepare(
		`INSERT INTO rejected_callbacks (id, received_at, status, code, message, issues, content_type, body, body_bytes)
		VALUES (?, ?, 400, 'invalid_event', 'The callback has 1 problem', '[]', 'application/json', ?, ?)`,
	)
		.bind(id, daysAgo(1), bytes, bodyBytes ?? bytes.length)
		.run();
	return id;
}

beforeEach(resetDatabase);

describe("rejected callbacks", () => {
	it("lists them newest first with their raw bodies, paged", async () => {
		await postCallback("{ first");
		await postCallback(new Uint8Array([0x7b, 0xff, 0x7d]));
		await postCallback({ event: "nope", email: "a@example.com", timestamp: 1 });
		const all = await rejectedList();
		expect(all.rejected).toHaveLength(3);
		const byCode = Object.fromEntries(all.rejected.map((row) => [String(row.body), row]));
		expect(byCode["{ first"]).toMatchObject({
			status: 400,
			code: "invalid_json",
			bodyEncoding: "utf-8",
			truncated: false,
			replayedAt: null,
		});
		expect(byCode["e/99"]).toMatchObject({
			code: "invalid_json",
			bodyEncoding: "base64",
			bodyBytes: 3,
		});
		const first = await rejectedList("?limit=2");
		const second = await rejectedList(`?limit=2&cursor=${first.cursor}`);
		expect([...first.rejected, ...second.rejected].map((row) => row.id)).toEqual(
			all.rejected.map((row) => row.id),
		);
		expect(second.cursor).toBeNull();
	});

	it("shows a UTF-8 body cut inside a character as text up to that character", async () => {
		// 2 bytes, then characters of 3: the cut at 64 KiB falls 2 bytes into the 21845th.
		const response = await postCallback(`["${"中".repeat(30_000)}`);
		expect(response.status).toBe(400);
		const [row] = (await rejectedList()).rejected;
		expect(row).toMatchObject({ truncated: true, bodyBytes: 90_002, bodyEncoding: "utf-8" });
		expect(row?.body).toBe(`["${"中".repeat(21_844)}`);
		// Bytes that are not UTF-8 before the cut, or a whole body that ends inside a character,
		// are still shown in base64.
		const invalid = await storeRejected(new Uint8Array([0xff, 0x7b]), 100_000);
		const unfinished = await storeRejected(new Uint8Array([0x7b, 0xe4, 0xb8]));
		const rows = (await rejectedList()).rejected;
		expect(rows.find((item) => item.id === invalid)).toMatchObject({
			bodyEncoding: "base64",
			body: "/3s=",
			truncated: true,
		});
		expect(rows.find((item) => item.id === unfinished)).toMatchObject({
			bodyEncoding: "base64",
			body: "e+S4",
			truncated: false,
		});
	});

	it("pages large bodies by size too, visiting each record once", async () => {
		const body = "x".repeat(64 * 1024);
		for (let i = 0; i < 40; i++) await storeRejected(body);
		const sizes: number[] = [];
		const seen = new Set<unknown>();
		let query = "?limit=1000";
		for (;;) {
			const page = await rejectedList(query);
			sizes.push(page.rejected.length);
			for (const row of page.rejected) {
				expect(row.body).toBe(body);
				seen.add(row.id);
			}
			if (page.cursor === null) break;
			query = `?limit=1000&cursor=${page.cursor}`;
		}
		// 2 MiB of bodies a page: 32 of 64 KiB, then the other 8.
		expect(sizes).toEqual([32, 8]);
		expect(seen.size).toBe(40);
	});

	it("loses no record stored between the page's two reads", async () => {
		const error = new ApiError(400, "invalid_json", "x");
		const record = (receivedAt: number) =>
			recordRejected(
				env.DB,
				{ receivedAt, error, contentType: null, body: new Uint8Array(10), bodyBytes: 10 },
				1e12,
			);
		const base = Math.floor(Date.now() / 1000) - 1000;
		for (let i = 0; i < 3; i++) await record(base + i);
		// A newer callback is refused and recorded just before the page's second read.
		let reads = 0;
		const db = new Proxy(env.DB, {
			get(target, property) {
				if (property === "prepare") {
					return (query: string) => {
						const statement = target.prepare(query);
						if (reads++ !== 1) return statement;
						return {
							bind: (...values: unknown[]) => ({
								all: async () => {
									await record(base + 10);
									return statement.bind(...values).all();
								},
							}),
						};
					};
				}
				const value = Reflect.get(target, property);
				return typeof value === "function" ? value.bind(target) : value;
			},
		});
		let page = await listRejected(db as D1Database, 3);
		const seen = page.rows.map((row) => row.receivedAt);
		while (page.next) {
			page = await listRejected(env.DB, 3, page.next);
			seen.push(...page.rows.map((row) => row.receivedAt));
		}
		// The walk began before it: it is on the next walk's first page, and nothing older is lost.
		expect(seen).toEqual([base + 2, base + 1, base]);
	});

	it("replays a stored body that today's validation accepts, once", async () => {
		const id = await storeRejected(
			JSON.stringify([
				{
					event: "bounce",
					bounceType: "hard_bounce",
					email: "r@example.com",
					timestamp: 1000,
					reason: "550",
				},
				{ event: "open", email: "r@example.com", timestamp: 1001 },
			]),
		);
		const response = await admin("POST", `/v1/rejected/${id}/replay`);
		expect(response.status).toBe(200);
		expect(await response.json()).toEqual({ ok: true, id, received: 2, stored: 2, duplicates: 0 });
		expect(await countRows("events")).toBe(2);
		expect((await lookup("r@example.com")).suppressed).toBe(true);
		const [row] = (await rejectedList()).rejected;
		expect(row).toMatchObject({ id, replayStored: 2, replayedAt: expect.stringMatching(/Z$/) });
		expect(await (await admin("POST", `/v1/rejected/${id}/replay`)).json()).toMatchObject({
			stored: 0,
			duplicates: 2,
		});
		// The record still says what the replay stored.
		expect((await rejectedList()).rejected[0]).toMatchObject({ id, replayStored: 2 });
	});

	it("two replays at once store the events once, and the record says so", async () => {
		const id = await storeRejected(
			JSON.stringify([
				{ event: "open", email: "c@example.com", timestamp: 1000 },
				{ event: "open", email: "c@example.com", timestamp: 1000 },
				{ event: "click", email: "c@example.com", timestamp: 1001 },
			]),
		);
		const answers = await Promise.all([
			admin("POST", `/v1/rejected/${id}/replay`),
			admin("POST", `/v1/rejected/${id}/replay`),
		]);
		const stored = await Promise.all(
			answers.map(async (answer) => ((await answer.json()) as { stored: number }).stored),
		);
		expect(stored.sort()).toEqual([0, 2]);
		expect((await rejectedList()).rejected[0]).toMatchObject({ id, replayStored: 2 });
	});

	it("a replay is stored and marked in one transaction, or not at all", async () => {
		const id = await storeRejected(
			JSON.stringify({ event: "spamreport", email: "m@example.com", timestamp: 1000 }),
		);
		// D1 rolls the whole batch back: a statement appended to it fails.
		const failing = envWithFailingBatch();
		const response = await call(
			`/v1/rejected/${id}/replay`,
			{ method: "POST", headers: { authorization: `Bearer ${tokens.admin}` } },
			failing,
		);
		expect(response.status).toBe(503);
		expect(await countRows("events")).toBe(0);
		expect((await rejectedList()).rejected[0]).toMatchObject({ id, replayStored: null });
		// Nor does a replay store events it cannot mark.
		const unmarked = await call(
			`/v1/rejected/${id}/replay`,
			{ method: "POST", headers: { authorization: `Bearer ${tokens.admin}` } },
			envWithFailingSql("SET replayed_at"),
		);
		expect(unmarked.status).toBe(503);
		expect(await countRows("events")).toBe(0);
		const retried = await admin("POST", `/v1/rejected/${id}/replay`);
		expect(await retried.json()).toMatchObject({ stored: 1 });
		expect((await lookup("m@example.com")).suppressed).toBe(true);
		expect((await rejectedList()).rejected[0]).toMatchObject({ id, replayStored: 1 });
	});

	it("a replay marks only its own record and stores its events as received now", async () => {
		const body = (email: string) => JSON.stringify({ event: "open", email, timestamp: 1000 });
		const replayed = await storeRejected(body("one@example.com"));
		const other = await storeRejected(body("two@example.com"));
		const before = Math.floor(Date.now() / 1000);
		expect((await admin("POST", `/v1/rejected/${replayed}/replay`)).status).toBe(200);
		const rows = (await rejectedList()).rejected;
		const mark = rows.find((row) => row.id === replayed);
		expect(mark).toMatchObject({ replayStored: 1 });
		expect(Date.parse(String(mark?.replayedAt)) / 1000).toBeGreaterThanOrEqual(before);
		expect(rows.find((row) => row.id === other)).toMatchObject({
			replayedAt: null,
			replayStored: null,
		});
		// The record was refused a day ago; the replay stores its event as arriving now.
		const events = (await (await getJson("/v1/events?email=one%40example.com")).json()) as {
			events: Json[];
		};
		expect(events.events).toHaveLength(1);
		expect(Date.parse(String(events.events[0]?.receivedAt)) / 1000).toBeGreaterThanOrEqual(before);
	});

	it("answers 422 with the issues when the body still fails", async () => {
		const id = await storeRejected('{"event":"bogus","email":"a@example.com","timestamp":1}');
		const response = await admin("POST", `/v1/rejected/${id}/replay`);
		expect(response.status).toBe(422);
		const body = (await response.json()) as { error: { code: string; issues: Json[] } };
		expect(body.error.code).toBe("still_invalid");
		expect(body.error.issues[0]).toMatchObject({ path: "event" });
		expect(await countRows("events")).toBe(0);
	});

	it("answers 409 for a body kept only in part, 404 for an unknown id, 403 for a read token", async () => {
		const id = await storeRejected('{"event":"open"', 300_000);
		expect((await admin("POST", `/v1/rejected/${id}/replay`)).status).toBe(409);
		expect((await admin("POST", "/v1/rejected/no-such-id/replay")).status).toBe(404);
		const read = await call(`/v1/rejected/${id}/replay`, {
			method: "POST",
			headers: { authorization: `Bearer ${tokens.lookup}` },
		});
		expect(read.status).toBe(403);
	});
});

describe("GET /v1/suppressions/{email}/history", () => {
	it("records each kind of change with its source, oldest first", async () => {
		const email = "h@example.com";
		const first = {
			event: "bounce",
			bounceType: "hard_bounce",
			email,
			timestamp: 1000,
			reason: "550 first",
		};
		const again = { ...first, timestamp: 2000, reason: "550 again" };
		await postCallback(first);
		await postCallback(again);
		await admin("DELETE", `/v1/suppressions/${email}`);
		await admin("PUT", `/v1/suppressions/${email}`, {
			reason: "by hand",
			expiresAt: Math.floor(Date.now() / 1000) + 120,
		});
		await runCron(Date.now() + 3_600_000);
		// After the removal above: older soft bounces would be ignored.
		const t = Math.floor(Date.now() / 1000) + 5;
		const soft = (at: number) => ({
			event: "bounce",
			bounceType: "soft_bounce",
			email,
			timestamp: at,
		});
		await postCallback([soft(t), soft(t + 1), soft(t + 2)]);
		await postCallback({ event: "delivered", email, timestamp: t + 1 });

		const response = await getJson(`/v1/suppressions/${encodeURIComponent(email)}/history`);
		const body = (await response.json()) as { email: string; history: Json[] };
		expect(body.email).toBe(email);
		// The cron ran an hour ahead: the expiry it recorded, dated two minutes from now, is later
		// than the changes written since, which the database dates now.
		expect(body.history.map((line) => [line.action, line.list, line.source, line.note])).toEqual([
			["added", "bounce", "event", "550 first"],
			["renewed", "bounce", "event", "550 again"],
			["removed", "bounce", "api", null],
			["added", "manual", "api", "by hand"],
			["added", "bounce", "event", null],
			["removed", "bounce", "event", "a delivery broke the run of soft bounces"],
			["expired", "manual", "cron", null],
		]);
		expect(body.history[0]).toMatchObject({
			eventId: expect.stringMatching(/^[0-9a-f]{32}$/),
			at: expect.stringMatching(/Z$/),
		});
		// Each line names the event that made the change, and one the operator or cron made none.
		expect(body.history.map((line) => line.eventId)).toEqual([
			await eventKey(first),
			await eventKey(again),
			null,
			null,
			await eventKey(soft(t + 2)),
			null,
			null,
		]);
	});

	/**
	 * `o@example.com` with a bounce entry an operator added an hour ago that ran out a minute ago,
	 * the cron not having retired it yet (its history backdated as the hour would have left it),
	 * and a manual entry added now.
	 */
	async function lapsedBesideLive(): Promise<number> {
		const now = Math.floor(Date.now() / 1000);
		await admin("PUT", "/v1/suppressions/o%40example.com", { list: "bounce", expiresAt: now + 60 });
		await env.DB.batch([
			env.DB.prepare(
				"UPDATE suppressions SET created_at = ?1 - 3600, updated_at = ?1 - 3600, expires_at = ?1 - 60",
			).bind(now),
			// The update above is the test's, not the service's: only the PUT's line stays.
			env.DB.prepare("DELETE FROM suppression_history WHERE action != 'added'"),
			env.DB.prepare("UPDATE suppression_history SET at = ?1 - 3600").bind(now),
		]);
		await admin("PUT", "/v1/suppressions/o%40example.com", { list: "manual" });
		return now;
	}

	async function historyLines() {
		const response = await getJson("/v1/suppressions/o%40example.com/history");
		const { history } = (await response.json()) as { history: Json[] };
		return history.map((line) => [line.action, line.list, Date.parse(String(line.at)) / 1000]);
	}

	it("is oldest first when the cron records an expiry after a later change", async () => {
		const now = await lapsedBesideLive();
		await runCron();
		expect(await historyLines()).toEqual([
			["added", "bounce", now - 3600],
			["expired", "bounce", now - 60],
			["added", "manual", expect.any(Number)],
		]);
	});

	it("is oldest first when a removal records an expiry beside a removal", async () => {
		const now = await lapsedBesideLive();
		expect((await admin("DELETE", "/v1/suppressions/o%40example.com")).status).toBe(200);
		const lines = await historyLines();
		expect(lines.map(([action, list]) => [action, list])).toEqual([
			["added", "bounce"],
			["expired", "bounce"],
			["added", "manual"],
			["removed", "manual"],
		]);
		expect(lines[1]?.[2]).toBe(now - 60);
	});

	it("is empty for an address never suppressed", async () => {
		expect(await (await getJson("/v1/suppressions/none%40example.com/history")).json()).toEqual({
			email: "none@example.com",
			history: [],
		});
	});
});

describe("DELETE /v1/addresses/{email}", () => {
	beforeEach(async () => {
		await postCallback([
			{ event: "delivered", email: "gone@example.com", timestamp: 1000 },
			{ event: "spamreport", email: "gone@example.com", timestamp: 2000 },
			{ event: "open", email: "other@example.com", timestamp: 2000 },
		]);
	});

	it("erases the events but keeps the address suppressed", async () => {
		const response = await admin("DELETE", "/v1/addresses/gone%40example.com");
		expect(await response.json()).toEqual({
			email: "gone@example.com",
			eventsDeleted: 2,
			suppressionsDeleted: 0,
		});
		const events = (await (await getJson("/v1/events?email=gone%40example.com")).json()) as {
			events: unknown[];
		};
		expect(events.events).toEqual([]);
		expect((await lookup("gone@example.com")).suppressed).toBe(true);
		expect(await countRows("events")).toBe(1);
	});

	it("with suppressions=true erases the entries and their history too", async () => {
		const response = await admin("DELETE", "/v1/addresses/gone%40example.com?suppressions=true");
		expect(await response.json()).toEqual({
			email: "gone@example.com",
			eventsDeleted: 2,
			suppressionsDeleted: 1,
		});
		expect((await lookup("gone@example.com")).suppressed).toBe(false);
		expect(await countRows("suppression_history")).toBe(0);
	});

	it("with suppressions=true counts the entries that still applied, as a removal does", async () => {
		// A manual entry that has run out and waits for the cron: erased, but no longer an entry.
		const now = Math.floor(Date.now() / 1000);
		await env.DB.prepare(
			`INSERT INTO suppressions (email, list, scope, origin, event_count, created_at, updated_at,
				expires_at) VALUES ('gone@example.com', 'manual', '*', 'api', 0, ?1, ?1, ?2)`,
		)
			.bind(now - 120, now - 60)
			.run();
		expect((await lookup("gone@example.com", "?consistent=true")).entries).toHaveLength(1);
		const response = await admin("DELETE", "/v1/addresses/gone%40example.com?suppressions=true");
		expect(await response.json()).toEqual({
			email: "gone@example.com",
			eventsDeleted: 2,
			suppressionsDeleted: 1,
		});
		expect(await countRows("suppressions")).toBe(0);
	});

	it("with suppressions=true leaves no recorded removal of the address either", async () => {
		await admin("DELETE", "/v1/suppressions/gone%40example.com");
		expect(await countRows("suppression_removals")).toBeGreaterThan(0);
		await admin("DELETE", "/v1/addresses/gone%40example.com?suppressions=true");
		expect(await countRows("suppression_removals")).toBe(0);
	});

	it("when KV keeps the erased entries, the next cron run deletes them", async () => {
		const failing = countingKv({ delete: true });
		const response = await call(
			"/v1/addresses/gone%40example.com?suppressions=true",
			{ method: "DELETE", headers: { authorization: `Bearer ${tokens.admin}` } },
			failing.env,
		);
		expect(response.status).toBe(200);
		expect(failing.counts.delete).toBe(1);
		expect(await env.SUPPRESSIONS.get("s:gone@example.com")).not.toBeNull();
		const queued = () =>
			env.DB.prepare("SELECT count(*) AS n FROM edge_pending WHERE email = ?")
				.bind("gone@example.com")
				.first<{ n: number }>();
		expect((await queued())?.n).toBe(1);
		// Both sweeps at the end of their cycle, so that only the queue can lead the cron to it.
		await parkSweeps();
		// The address waits in the queue only until the cron has made sure its key is gone.
		await runCron(Date.now() + (KV_WRITE_SETTLE_SECONDS + 1) * 1000);
		expect(await env.SUPPRESSIONS.get("s:gone@example.com")).toBeNull();
		expect((await queued())?.n).toBe(0);
	});

	it("leaves no soft-bounce recheck queued for the address", async () => {
		// Queued as if a callback's recheck had failed (see the soft-bounce policy tests).
		await env.DB.prepare("INSERT INTO soft_bounce_recheck (email) VALUES (?1), (?2)")
			.bind("gone@example.com", "other@example.com")
			.run();
		await admin("DELETE", "/v1/addresses/gone%40example.com");
		const left = await env.DB.prepare("SELECT email FROM soft_bounce_recheck").all();
		expect(left.results).toEqual([{ email: "other@example.com" }]);
	});

	it("refuses a bad flag and a read token", async () => {
		expect(
			(await admin("DELETE", "/v1/addresses/gone%40example.com?suppressions=yes")).status,
		).toBe(400);
		const read = await call("/v1/addresses/gone%40example.com", {
			method: "DELETE",
			headers: { authorization: `Bearer ${tokens.lookup}` },
		});
		expect(read.status).toBe(403);
		expect(await countRows("events")).toBe(3);
	});
});

describe("GET /openapi.json", () => {
	it("serves the OpenAPI 3.1 document without auth", async () => {
		const response = await call("/openapi.json");
		expect(response.status).toBe(200);
		const document = (await response.json()) as { openapi: string; paths: Record<string, unknown> };
		expect(document.openapi).toBe("3.1.0");
		expect(Object.keys(document.paths)).toContain("/v1/suppressions/{email}/history");
	});
});

describe("GET /openapi.json: the defaults the contract names", () => {
	type Schema = { default?: unknown };
	type Operation = {
		parameters: Array<{ name: string; in: string; schema: Schema }>;
		requestBody?: { content: Record<string, { schema: { properties: Record<string, Schema> } }> };
	};
	async function operation(path: string, method: string): Promise<Operation> {
		const document = (await (await call("/openapi.json")).json()) as {
			paths: Record<string, Record<string, Operation>>;
		};
		const found = document.paths[path]?.[method];
		if (!found) throw new Error(`${method} ${path} is not documented`);
		return found;
	}

	it("a PUT body's list defaults to manual and its scope to *, the others to null", async () => {
		const put = await operation("/v1/suppressions/{email}", "put");
		const properties = put.requestBody?.content["application/json"]?.schema.properties ?? {};
		expect(
			Object.fromEntries(
				Object.entries(properties).map(([name, schema]) => [name, schema.default]),
			),
		).toEqual({ list: "manual", scope: "*", reason: null, expiresAt: null });
	});

	it("a lookup reads KV unless consistent=true: consistent defaults to false", async () => {
		const get = await operation("/v1/suppressions/{email}", "get");
		expect(get.parameters.find((p) => p.name === "consistent")?.schema.default).toBe("false");
	});

	it.each(["/v1/events", "/v1/suppressions", "/v1/rejected"])(
		"GET %s: limit defaults to 100",
		async (path) => {
			const limit = (await operation(path, "get")).parameters.find((p) => p.name === "limit");
			expect(limit?.schema.default).toBe("100");
		},
	);
});
