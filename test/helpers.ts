import {
	createExecutionContext,
	createScheduledController,
	waitOnExecutionContext,
} from "cloudflare:test";
import { env } from "cloudflare:workers";
import { expect, vi } from "vitest";
import worker from "../src/index";
import { forgetEdgeLag } from "../src/suppressions/edge-lag";
import samplesText from "./fixtures/tencent-doc-samples.jsonl?raw";

/** Tencent's published samples, as the objects they are. */
export const docSamples: Record<string, unknown>[] = samplesText
	.split("\n")
	.filter((line) => line.trim() !== "")
	.map((line) => JSON.parse(line));

/** The raw lines of the samples, byte for byte as published. */
export const docSampleLines: string[] = samplesText
	.split("\n")
	.filter((line) => line.trim() !== "");

export const tokens = {
	callback: env.CALLBACK_TOKENS,
	lookup: env.LOOKUP_TOKENS,
	admin: env.ADMIN_TOKENS,
};

/** Calls the Worker's own `fetch` with the test bindings (or `testEnv`), waiting for waitUntil work. */
export async function call(
	path: string,
	init?: RequestInit,
	testEnv: Env = env,
): Promise<Response> {
	const ctx = createExecutionContext();
	// A test request has no `cf` object; the Worker never reads it.
	const request = new Request(`http://worker.test${path}`, init) as Request<
		unknown,
		IncomingRequestCfProperties
	>;
	const response = await worker.fetch(request, testEnv, ctx);
	await waitOnExecutionContext(ctx);
	return response;
}

/** POSTs a callback body (a string is sent as is, anything else as JSON). */
export function postCallback(
	body: unknown,
	options: { token?: string; headers?: HeadersInit; env?: Env } = {},
): Promise<Response> {
	const payload =
		typeof body === "string" || body instanceof Uint8Array ? body : JSON.stringify(body);
	return call(
		`/v1/callbacks/tencent/${options.token ?? tokens.callback}`,
		{ method: "POST", body: payload, headers: options.headers },
		options.env,
	);
}

/** GET with a bearer token (the lookup token unless another is given). */
export function getJson(path: string, token: string | null = tokens.lookup): Promise<Response> {
	return call(path, { headers: token === null ? {} : { authorization: `Bearer ${token}` } });
}

const TABLES = [
	"events",
	"rejected_callbacks",
	"suppressions",
	"suppression_removals",
	"suppression_history",
	"cron_state",
	"daily_stats",
	"edge_pending",
	"soft_bounce_recheck",
];

/**
 * Deletes every row and KV key, and this isolate's memo of the lag mark, so a test does not depend
 * on what ran before it.
 */
export async function resetDatabase(): Promise<void> {
	await env.DB.batch(TABLES.map((table) => env.DB.prepare(`DELETE FROM ${table}`)));
	let cursor: string | undefined;
	do {
		const page = await env.SUPPRESSIONS.list(cursor ? { cursor } : {});
		await Promise.all(page.keys.map((key) => env.SUPPRESSIONS.delete(key.name)));
		cursor = page.list_complete ? undefined : page.cursor;
	} while (cursor);
	// The lag mark went with the keys; this isolate's memo of it must go too.
	forgetEdgeLag(env.SUPPRESSIONS);
}

export async function countRows(table: string): Promise<number> {
	const row = await env.DB.prepare(`SELECT count(*) AS n FROM ${table}`).first<{ n: number }>();
	return row?.n ?? 0;
}

/**
 * An env whose D1 `batch` goes through `wrap` (given the real batch and the statements); every
 * other method is the real one. For injecting failures and counting, never for faking storage.
 */
export function envWithBatch(
	wrap: (
		batch: (statements: D1PreparedStatement[]) => Promise<D1Result[]>,
		statements: D1PreparedStatement[],
	) => Promise<D1Result[]>,
): Env {
	const db = new Proxy(env.DB, {
		get(target, property) {
			if (property === "batch") {
				return (statements: D1PreparedStatement[]) =>
					wrap((list) => target.batch(list), statements);
			}
			const value = Reflect.get(target, property);
			return typeof value === "function" ? value.bind(target) : value;
		},
	});
	return { ...env, DB: db };
}

/** An env whose D1 runs each batch with one more statement that fails, so D1 must roll back. */
export function envWithFailingBatch(): Env {
	return envWithBatch((batch, statements) =>
		batch([...statements, env.DB.prepare("INSERT INTO no_such_table VALUES (1)")]),
	);
}

/** An env whose D1 fails the `n`th batch (counting from 1) and runs every other one. */
export function envWithNthBatchFailing(n: number): Env {
	let batches = 0;
	return envWithBatch((batch, statements) =>
		++batches === n
			? Promise.reject(new Error(`batch ${n} refused by the test`))
			: batch(statements),
	);
}

/** An env whose D1 refuses to prepare any statement whose SQL contains `fragment`. */
export function envWithFailingSql(fragment: string): Env {
	const db = new Proxy(env.DB, {
		get(target, property) {
			if (property === "prepare") {
				return (sql: string) => {
					if (sql.includes(fragment)) throw new Error("D1_ERROR: injected");
					return target.prepare(sql);
				};
			}
			const value = Reflect.get(target, property);
			return typeof value === "function" ? value.bind(target) : value;
		},
	});
	return { ...env, DB: db };
}

export type EntryJson = {
	list: string;
	scope: string;
	reason: string | null;
	source: string;
	eventCount: number;
	lastEventAt: string | null;
	bulkId: string | null;
	createdAt: string;
	updatedAt: string;
	expiresAt: string | null;
};
export type Lookup = { email: string; suppressed: boolean; entries: EntryJson[] };

/** `GET /v1/suppressions/{email}` with the lookup token; `consistent` reads D1. */
export async function lookup(email: string, query = "", testEnv: Env = env): Promise<Lookup> {
	const response = await call(
		`/v1/suppressions/${encodeURIComponent(email)}${query}`,
		{ headers: { authorization: `Bearer ${tokens.lookup}` } },
		testEnv,
	);
	if (response.status !== 200)
		throw new Error(`lookup answered ${response.status}: ${await response.text()}`);
	return (await response.json()) as Lookup;
}

/** `PUT /v1/suppressions/{email}` with the admin token; fails the test unless it answers 200. */
export async function putSuppression(email: string, body: Record<string, unknown>): Promise<void> {
	const response = await call(`/v1/suppressions/${encodeURIComponent(email)}`, {
		method: "PUT",
		headers: { authorization: `Bearer ${tokens.admin}` },
		body: JSON.stringify(body),
	});
	if (response.status !== 200) {
		throw new Error(`PUT answered ${response.status}: ${await response.text()}`);
	}
}

/** An address's entries from D1, without the wall-clock fields, sorted for comparison. */
export async function entriesOf(email: string): Promise<Array<Partial<EntryJson>>> {
	const { entries } = await lookup(email, "?consistent=true");
	return entries
		.map(({ createdAt, updatedAt, ...rest }) => rest)
		.sort((a, b) => JSON.stringify(a).localeCompare(JSON.stringify(b)));
}

/** The KV binding wrapped to count operations and, on request, to fail puts, gets or deletes. */
export function countingKv(fail: { put?: boolean; get?: boolean; delete?: boolean } = {}) {
	const counts = { put: 0, delete: 0, get: 0, list: 0 };
	const kv = new Proxy(env.SUPPRESSIONS, {
		get(target, property) {
			if (
				property === "put" ||
				property === "delete" ||
				property === "get" ||
				property === "list"
			) {
				return (...args: unknown[]) => {
					counts[property]++;
					if (
						(property === "put" && fail.put) ||
						(property === "get" && fail.get) ||
						(property === "delete" && fail.delete)
					) {
						return Promise.reject(new Error("KV: injected failure (429 Too Many Requests)"));
					}
					return Reflect.apply(Reflect.get(target, property), target, args);
				};
			}
			const value = Reflect.get(target, property);
			return typeof value === "function" ? value.bind(target) : value;
		},
	});
	return { counts, env: { ...env, SUPPRESSIONS: kv } as Env };
}

/**
 * The D1 binding wrapped to count round trips: each `batch`, and each statement run on its own
 * (`all`, `first`, `run`, `raw`), and the rows read by those that report it (`all`, `run`,
 * `batch`). The statements stay the runtime's own, so a batch takes them.
 */
export function countingD1() {
	const counts = { batches: 0, single: 0, rowsRead: 0 };
	const addRowsRead = (result: unknown) => {
		const meta = (result as { meta?: { rows_read?: number } } | null)?.meta;
		counts.rowsRead += meta?.rows_read ?? 0;
		return result;
	};
	const count = (statement: D1PreparedStatement): D1PreparedStatement => {
		for (const method of ["all", "first", "run", "raw"] as const) {
			const real = Reflect.get(statement, method) as (...args: unknown[]) => Promise<unknown>;
			Object.defineProperty(statement, method, {
				value: (...args: unknown[]) => {
					counts.single++;
					return Reflect.apply(real, statement, args).then(addRowsRead);
				},
			});
		}
		const bind = statement.bind.bind(statement);
		Object.defineProperty(statement, "bind", {
			value: (...values: unknown[]) => count(bind(...values)),
		});
		return statement;
	};
	const db = new Proxy(env.DB, {
		get(target, property) {
			if (property === "prepare") return (query: string) => count(target.prepare(query));
			if (property === "batch") {
				return async (statements: D1PreparedStatement[]) => {
					counts.batches++;
					const results = await target.batch(statements);
					for (const result of results) addRowsRead(result);
					return results;
				};
			}
			const value = Reflect.get(target, property);
			return typeof value === "function" ? value.bind(target) : value;
		},
	});
	return { counts, env: { ...env, DB: db } as Env };
}

/**
 * Puts both of the reconcile cron's sweeps at the end of their cycle, so that its next run checks
 * only what its queues lead it to (the run after starts a new cycle).
 */
export async function parkSweeps(): Promise<void> {
	await env.DB.prepare(
		`INSERT OR REPLACE INTO cron_state (name, value) VALUES ('reconcile', '{"d1":true,"kv":true}')`,
	).run();
}

/** Runs the Worker's `scheduled` handler once, as the cron would. */
export async function runCron(at = Date.now(), testEnv: Env = env): Promise<void> {
	const controller = createScheduledController({ scheduledTime: at, cron: "*/5 * * * *" });
	await worker.scheduled(controller, testEnv);
}

/** What a cron run's `reconcile` log line says. */
export interface ReconcileLine {
	rechecked: number;
	expired: number;
	checked: number;
	fixed: number;
	done: boolean;
}

/** Runs the cron at `at` and returns its `reconcile` log line, which must be there. */
export async function runCronReconciled(
	at = Date.now(),
	testEnv: Env = env,
): Promise<ReconcileLine> {
	const lines: string[] = [];
	const spy = vi.spyOn(console, "log").mockImplementation((line: string) => {
		lines.push(line);
	});
	try {
		await runCron(at, testEnv);
	} finally {
		spy.mockRestore();
	}
	const entry = lines
		.map((line) => JSON.parse(line) as Record<string, unknown>)
		.find((line) => line.message === "reconcile");
	expect(entry).toBeDefined();
	return entry as unknown as ReconcileLine;
}

/** Days before now, in Unix seconds. */
export function daysAgo(days: number): number {
	return Math.floor(Date.now() / 1000) - Math.round(days * 86_400);
}
