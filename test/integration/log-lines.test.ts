/**
 * The log lines docs/deploy.md ("Reading the logs") tells an operator to filter and alert on: each
 * is made to happen as the docs describe it, and its message, level and fields are checked, since
 * an alert that filters on a message nobody logs never fires.
 */
import { env } from "cloudflare:workers";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { KV_WRITE_SETTLE_SECONDS } from "../../src/cron/edge-repair";
import { LAG_KEY } from "../../src/suppressions/edge-lag";
import {
	call,
	countingKv,
	daysAgo,
	envWithFailingBatch,
	envWithFailingSql,
	envWithNthBatchFailing,
	parkSweeps,
	postCallback,
	resetDatabase,
	runCron,
	tokens,
} from "../helpers";

type Line = Record<string, unknown>;

const LEVELS = { log: "info", warn: "warn", error: "error" } as const;

/**
 * Every line the Worker logs from now on, parsed, with `via` the level its console method
 * stands for (Workers Logs takes the level from the method, alerts from the `level` field).
 */
function captureLines(): Line[] {
	const lines: Line[] = [];
	for (const method of ["log", "warn", "error"] as const) {
		vi.spyOn(console, method).mockImplementation((line: string) => {
			lines.push({ ...(JSON.parse(line) as Line), via: LEVELS[method] });
		});
	}
	return lines;
}

/** The lines other than the request's own. */
const own = (lines: Line[]) => lines.filter((line) => line.message !== "request");

beforeEach(resetDatabase);
afterEach(() => vi.restoreAllMocks());

describe("storage refusing a callback or a replay", () => {
	it('"callback not stored": an error with the request id and what D1 said; Tencent gets a 503', async () => {
		const lines = captureLines();
		const response = await postCallback(
			{ event: "delivered", email: "a@example.com", timestamp: 1 },
			{ env: envWithFailingBatch() },
		);
		expect(response.status).toBe(503);
		const requestId = response.headers.get("x-request-id");
		expect(own(lines)).toEqual([
			{
				level: "error",
				via: "error",
				message: "callback not stored",
				time: expect.any(String),
				requestId,
				error: expect.stringContaining("no_such_table"),
			},
		]);
		expect(lines).toContainEqual(
			expect.objectContaining({
				level: "error",
				message: "request",
				requestId,
				status: 503,
				code: "storage_unavailable",
			}),
		);
	});

	it('"rejected callback not recorded": an error with the refusal\'s code and what D1 said', async () => {
		const lines = captureLines();
		const response = await postCallback("{", { env: envWithFailingSql("rejected_callbacks") });
		expect(response.status).toBe(503);
		expect(own(lines)).toEqual([
			{
				level: "error",
				via: "error",
				message: "rejected callback not recorded",
				time: expect.any(String),
				requestId: response.headers.get("x-request-id"),
				code: "invalid_json",
				error: expect.stringContaining("injected"),
			},
		]);
	});

	it('"...: refused callbacks fill MAX_REJECTED_MIB": the whole message, at error, once full', async () => {
		// Refused callbacks already take more than the 1 MiB allowed.
		await env.DB.prepare("UPDATE rejected_storage SET bytes = 2 * 1024 * 1024").run();
		try {
			const lines = captureLines();
			const response = await postCallback("{", { env: { ...env, MAX_REJECTED_MIB: "1" } });
			expect(response.status).toBe(503);
			expect(own(lines)).toEqual([
				{
					level: "error",
					via: "error",
					message: "rejected callback not recorded: refused callbacks fill MAX_REJECTED_MIB",
					time: expect.any(String),
					requestId: response.headers.get("x-request-id"),
					code: "invalid_json",
				},
			]);
		} finally {
			await env.DB.prepare(
				"UPDATE rejected_storage SET bytes = (SELECT coalesce(sum(kept_bytes), 0) FROM rejected_callbacks)",
			).run();
		}
	});

	it('"replay not stored": an error with the request id when D1 refuses a replay', async () => {
		const refused = await postCallback({ event: "reject", email: "r@example.com", timestamp: 1 });
		expect(refused.status).toBe(400);
		const row = await env.DB.prepare("SELECT id FROM rejected_callbacks").first<{ id: string }>();
		// Today's validation passes it: the stored event is made a known kind.
		await env.DB.prepare(
			`UPDATE rejected_callbacks SET body = CAST('{"event":"delivered","email":"r@example.com","timestamp":1}' AS BLOB)`,
		).run();
		const lines = captureLines();
		const response = await call(
			`/v1/rejected/${row?.id}/replay`,
			{ method: "POST", headers: { authorization: `Bearer ${tokens.admin}` } },
			envWithFailingBatch(),
		);
		expect(response.status).toBe(503);
		expect(own(lines)).toEqual([
			{
				level: "error",
				via: "error",
				message: "replay not stored",
				time: expect.any(String),
				requestId: response.headers.get("x-request-id"),
				error: expect.stringContaining("no_such_table"),
			},
		]);
	});

	it('"soft-bounce recheck left to the cron": a warning, and the callback still answers 200', async () => {
		const soft = (timestamp: number) => ({
			event: "bounce",
			bounceType: "soft_bounce",
			email: "s@example.com",
			timestamp,
		});
		const t = daysAgo(1);
		// Three soft bounces in a row suppress the address for a while.
		await postCallback([soft(t), soft(t + 60), soft(t + 120)]);
		const lines = captureLines();
		// The first batch stores the late delivery; the second, the recheck, fails.
		const response = await postCallback(
			{ event: "delivered", email: "s@example.com", timestamp: t + 90 },
			{ env: envWithNthBatchFailing(2) },
		);
		expect(response.status).toBe(200);
		expect(own(lines)).toEqual([
			{
				level: "warn",
				via: "warn",
				message: "soft-bounce recheck left to the cron",
				time: expect.any(String),
				requestId: response.headers.get("x-request-id"),
				error: expect.stringContaining("batch 2 refused"),
			},
		]);
	});
});

describe("KV refusing reads", () => {
	it('"edge read failed, reading D1": a warning for a lookup, which answers from D1', async () => {
		await postCallback({ event: "spamreport", email: "k@example.com", timestamp: 1 });
		const lines = captureLines();
		const response = await call(
			"/v1/suppressions/k%40example.com",
			{ headers: { authorization: `Bearer ${tokens.lookup}` } },
			countingKv({ get: true }).env,
		);
		expect(response.status).toBe(200);
		expect(await response.json()).toMatchObject({ suppressed: true });
		// A successful lookup has no request line: this is the operator's only sign.
		expect(lines).toEqual([
			{
				level: "warn",
				via: "warn",
				message: "edge read failed, reading D1",
				time: expect.any(String),
				requestId: response.headers.get("x-request-id"),
				error: "Error: KV: injected failure (429 Too Many Requests)",
			},
		]);
	});

	it('"edge bulk read failed, reading D1": a warning for a check, which answers from D1', async () => {
		await postCallback({ event: "spamreport", email: "k@example.com", timestamp: 1 });
		const lines = captureLines();
		const response = await call(
			"/v1/suppressions/check",
			{
				method: "POST",
				headers: { authorization: `Bearer ${tokens.lookup}` },
				body: JSON.stringify({ emails: ["k@example.com", "ok@example.com"] }),
			},
			countingKv({ get: true }).env,
		);
		expect(response.status).toBe(200);
		expect(await response.json()).toMatchObject({ suppressedCount: 1, deliverableCount: 1 });
		expect(lines).toEqual([
			{
				level: "warn",
				via: "warn",
				message: "edge bulk read failed, reading D1",
				time: expect.any(String),
				requestId: response.headers.get("x-request-id"),
				error: "Error: KV: injected failure (429 Too Many Requests)",
			},
		]);
	});

	it('"edge read failed, writing the keys": a warning for a redelivery, whose keys are written', async () => {
		const event = { event: "spamreport", email: "k@example.com", timestamp: 1 };
		await postCallback(event);
		await env.SUPPRESSIONS.delete("s:k@example.com");
		const lines = captureLines();
		// A redelivery checks its addresses' keys; KV refuses the read, so it writes them.
		const response = await postCallback(event, { env: countingKv({ get: true }).env });
		expect(response.status).toBe(200);
		expect(own(lines)).toEqual([
			{
				level: "warn",
				via: "warn",
				message: "edge read failed, writing the keys",
				time: expect.any(String),
				requestId: response.headers.get("x-request-id"),
				error: "Error: KV: injected failure (429 Too Many Requests)",
			},
		]);
		expect(await env.SUPPRESSIONS.get("s:k@example.com")).not.toBeNull();
	});
});

/** An env whose D1 refuses to prepare SQL holding `fragment` from its `n`th such statement on. */
function envFailingSqlFrom(fragment: string, n: number): Env {
	let seen = 0;
	const db = new Proxy(env.DB, {
		get(target, property) {
			if (property === "prepare") {
				return (sql: string) => {
					if (sql.includes(fragment) && ++seen >= n) throw new Error("D1_ERROR: injected");
					return target.prepare(sql);
				};
			}
			const value = Reflect.get(target, property);
			return typeof value === "function" ? value.bind(target) : value;
		},
	});
	return { ...env, DB: db };
}

describe("KV refusing writes, and the lag mark", () => {
	it('a request\'s "edge write failed" and "edge lag mark failed": warnings with its request id', async () => {
		const lines = captureLines();
		const response = await postCallback(
			["w1@example.com", "w2@example.com"].map((email) => ({
				event: "spamreport",
				email,
				timestamp: 1,
			})),
			{ env: countingKv({ put: true }).env },
		);
		expect(response.status).toBe(200);
		const requestId = response.headers.get("x-request-id");
		const error = "Error: KV: injected failure (429 Too Many Requests)";
		expect(own(lines)).toEqual([
			{
				level: "warn",
				via: "warn",
				message: "edge write failed",
				time: expect.any(String),
				requestId,
				failed: 2,
				error,
			},
			{
				level: "warn",
				via: "warn",
				message: "edge lag mark failed",
				time: expect.any(String),
				requestId,
				error,
			},
		]);
	});

	it('a cron run whose mark KV refuses logs "edge lag mark failed" beside its reconcile line', async () => {
		await postCallback({ event: "spamreport", email: "c@example.com", timestamp: 1 });
		await env.SUPPRESSIONS.delete("s:c@example.com");
		// Only the queue leads the run to the address.
		await parkSweeps();
		const lines = captureLines();
		await runCron(Date.now() + (KV_WRITE_SETTLE_SECONDS + 1) * 1000, countingKv({ put: true }).env);
		const error = "Error: KV: injected failure (429 Too Many Requests)";
		expect(lines.map(({ time, ...line }) => line)).toEqual([
			expect.objectContaining({ level: "info", message: "retention" }),
			{ level: "warn", via: "warn", message: "edge lag mark failed", error },
			{ level: "warn", via: "warn", message: "edge write failed", failed: 1, error },
			expect.objectContaining({ level: "info", message: "reconcile", fixed: 0, done: false }),
		]);
	});

	it('a cron run logs one "edge write failed" for the failed writes of its drain and its sweep', async () => {
		for (const email of ["queued@example.com", "swept@example.com"]) {
			await postCallback({ event: "spamreport", email, timestamp: 1 });
			await env.SUPPRESSIONS.delete(`s:${email}`);
		}
		// The drain finds the first address in the queue; the sweep of D1 finds the second.
		await env.DB.prepare("DELETE FROM edge_pending WHERE email = 'swept@example.com'").run();
		const lines = captureLines();
		await runCron(Date.now() + (KV_WRITE_SETTLE_SECONDS + 1) * 1000, countingKv({ put: true }).env);
		expect(lines.filter((line) => line.message === "edge write failed")).toEqual([
			{
				level: "warn",
				via: "warn",
				message: "edge write failed",
				time: expect.any(String),
				failed: 2,
				error: "Error: KV: injected failure (429 Too Many Requests)",
			},
		]);
	});

	it('an import whose KV writes fail logs "edge write failed" with its request id', async () => {
		const lines = captureLines();
		const response = await call(
			"/v1/suppressions/import",
			{
				method: "POST",
				headers: {
					authorization: `Bearer ${tokens.admin}`,
					"content-type": "application/x-ndjson",
				},
				body: ["i1@example.com", "i2@example.com"]
					.map((email) => JSON.stringify({ email, list: "manual", scope: "*", source: "api" }))
					.join("\n"),
			},
			countingKv({ put: true }).env,
		);
		expect(response.status).toBe(200);
		expect(own(lines).filter((line) => line.message === "edge write failed")).toEqual([
			{
				level: "warn",
				via: "warn",
				message: "edge write failed",
				time: expect.any(String),
				requestId: response.headers.get("x-request-id"),
				failed: 2,
				error: "Error: KV: injected failure (429 Too Many Requests)",
			},
		]);
	});

	it('"edge write check could not read D1": a warning, and KV is marked as lagging all the same', async () => {
		const lines = captureLines();
		// The callback's own batch reads the entries back (the first such statement); the check
		// after its KV writes (the second) is refused.
		const response = await postCallback(
			{ event: "spamreport", email: "o@example.com", timestamp: 1 },
			{ env: envFailingSqlFrom("PARTITION BY email", 2) },
		);
		expect(response.status).toBe(200);
		expect(own(lines)).toEqual([
			{
				level: "warn",
				via: "warn",
				message: "edge write check could not read D1",
				time: expect.any(String),
				requestId: response.headers.get("x-request-id"),
				error: expect.stringContaining("injected"),
			},
		]);
		expect(await env.SUPPRESSIONS.get("s:o@example.com")).not.toBeNull();
		expect(await env.SUPPRESSIONS.get(LAG_KEY)).not.toBeNull();
	});
});

describe("the cron's lines", () => {
	it('a run logs "retention" and "reconcile" at info, with the fields the docs name', async () => {
		const lines = captureLines();
		await runCron();
		expect(lines).toEqual([
			{
				level: "info",
				via: "info",
				message: "retention",
				time: expect.any(String),
				cron: "*/5 * * * *",
				countedTo: 0,
				deleted: 0,
				rejectedDeleted: 0,
				done: true,
			},
			{
				level: "info",
				via: "info",
				message: "reconcile",
				time: expect.any(String),
				cron: "*/5 * * * *",
				rechecked: 0,
				expired: 0,
				checked: 0,
				fixed: 0,
				done: true,
			},
		]);
	});

	it('"reconcile failed": an error with what failed, after the retention line; the run fails', async () => {
		const lines = captureLines();
		await expect(runCron(Date.now(), envWithFailingSql("edge_pending"))).rejects.toThrow(
			"injected",
		);
		expect(lines.map(({ time, ...line }) => line)).toEqual([
			expect.objectContaining({ level: "info", message: "retention", done: true }),
			{
				level: "error",
				via: "error",
				message: "reconcile failed",
				cron: "*/5 * * * *",
				error: "Error: D1_ERROR: injected",
			},
		]);
	});

	it('"KV sweep cursor refused, starting the sweep over": a warning, and the run goes on', async () => {
		await env.DB.prepare(
			`INSERT INTO cron_state (name, value) VALUES ('reconcile', '{"d1":true,"kv":"saved-cursor"}')`,
		).run();
		// KV no longer takes the saved cursor (an expired one, say).
		const refusing = new Proxy(env.SUPPRESSIONS, {
			get(target, property) {
				if (property === "list") {
					return (options?: KVNamespaceListOptions) =>
						options?.cursor
							? Promise.reject(new Error("KV list failed: invalid cursor"))
							: target.list(options);
				}
				const value = Reflect.get(target, property);
				return typeof value === "function" ? value.bind(target) : value;
			},
		});
		const lines = captureLines();
		await runCron(Date.now(), { ...env, SUPPRESSIONS: refusing });
		expect(lines.map(({ time, ...line }) => line)).toEqual([
			expect.objectContaining({ level: "info", message: "retention" }),
			{
				level: "warn",
				via: "warn",
				message: "KV sweep cursor refused, starting the sweep over",
				error: "Error: KV list failed: invalid cursor",
			},
			expect.objectContaining({ level: "info", message: "reconcile", done: false }),
		]);
		const state = await env.DB.prepare(
			"SELECT value FROM cron_state WHERE name = 'reconcile'",
		).first<{
			value: string;
		}>();
		expect(JSON.parse(state?.value ?? "")).toEqual({ d1: true, kv: "" });
	});
});

describe("failures a request's own line cannot tell", () => {
	it('"unhandled error": an error with the details, under the request id of the request line', async () => {
		const lines = captureLines();
		const response = await call(
			"/v1/events",
			{ headers: { authorization: `Bearer ${tokens.lookup}` } },
			envFailingSqlFrom("FROM events", 1),
		);
		expect(response.status).toBe(500);
		const requestId = response.headers.get("x-request-id");
		expect(lines.map(({ time, ...line }) => line)).toEqual([
			{
				level: "error",
				via: "error",
				message: "unhandled error",
				requestId,
				error: "D1_ERROR: injected",
				stack: expect.stringContaining("D1_ERROR: injected"),
			},
			{
				level: "error",
				via: "error",
				message: "request",
				requestId,
				method: "GET",
				route: "/v1/events",
				status: 500,
				ms: expect.any(Number),
				code: "internal",
			},
		]);
	});

	it('"export failed": an error when a page after the first cannot be read, the answer a 200', async () => {
		// One entry more than a page of the export.
		await env.DB.prepare(
			`WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 1000)
			INSERT INTO suppressions (email, list, scope, origin, reason, event_count, created_at,
				updated_at, expires_at, change_note)
			SELECT 'x' || i || '@example.com', 'manual', '*', 'api', NULL, 0, ?1, ?1, NULL, 'seeded'
			FROM n`,
		)
			.bind(Math.floor(Date.now() / 1000))
			.run();
		const lines = captureLines();
		const response = await call(
			"/v1/suppressions/export",
			{ headers: { authorization: `Bearer ${tokens.lookup}` } },
			envFailingSqlFrom("FROM suppressions", 2),
		);
		expect(response.status).toBe(200);
		await expect(response.text()).rejects.toThrow();
		// The export is a read: no request line, so this is the operator's only sign.
		expect(lines.map(({ time, ...line }) => line)).toEqual([
			{
				level: "error",
				via: "error",
				message: "export failed",
				requestId: response.headers.get("x-request-id"),
				error: "Error: D1_ERROR: injected",
			},
		]);
	});
});
