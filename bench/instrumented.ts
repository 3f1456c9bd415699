// The Worker under test with its storage counted, for the per-event figures of bench/run.mjs.
// Run as `wrangler dev bench/instrumented.ts` on the project's wrangler.toml (the positional script
// overrides `main`), so the bindings, vars and compatibility settings are the real ones.
//
// - `POST /__bench/count?path=/v1/...` runs the request given as this request's method, headers
//   and body through the Worker with `env.DB` and `env.SUPPRESSIONS` wrapped in counting Proxies,
//   waits for everything it passed to `ctx.waitUntil` (the KV writes happen there, after the
//   response), and answers `{status, body, counts}`.
// - `GET /__bench/cpu?n=&rounds=` times reading a realistic one-event callback body inside workerd:
//   strict UTF-8, JSON (with the checks of a callback's parser) and `parseCallback`.
// - `POST /__bench/retention` runs the retention cron's pruning, counted, as if every stored event
//   were past retention: what deleting an event costs.
// - Anything else goes to the Worker unchanged.
import { parseJsonBytes } from "../src/body";
import { loadSettings } from "../src/config";
import { pruneStorage } from "../src/cron/retention";
import worker from "../src/index";
import { parseCallbackJson } from "../src/json";
import { parseCallback } from "../src/tencent/normalise";

interface Counts {
	/** Calls that reach D1: batch, run, all, first, raw, exec. */
	d1RoundTrips: number;
	/** Prepared statements executed, each statement of a batch counted. */
	d1Statements: number;
	/** Sum of `meta.rows_written` of the results (first and raw return no meta). */
	d1RowsWritten: number;
	d1RowsRead: number;
	/** Wall time spent waiting for D1 (workerd's clock advances at I/O, so this is meaningful). */
	d1Ms: number;
	kvReads: number;
	kvWrites: number;
	waitUntil: number;
}

const zero = (): Counts => ({
	d1RoundTrips: 0,
	d1Statements: 0,
	d1RowsWritten: 0,
	d1RowsRead: 0,
	d1Ms: 0,
	kvReads: 0,
	kvWrites: 0,
	waitUntil: 0,
});

let counts = zero();

type Meta = { meta?: { rows_written?: number; rows_read?: number } };

function addMeta(result: unknown): void {
	const meta = (result as Meta | null)?.meta;
	counts.d1RowsWritten += meta?.rows_written ?? 0;
	counts.d1RowsRead += meta?.rows_read ?? 0;
}

async function timed<T>(work: () => Promise<T>): Promise<T> {
	const start = Date.now();
	try {
		return await work();
	} finally {
		counts.d1Ms += Date.now() - start;
	}
}

/** The real statement behind each counting Proxy: `batch` must be given the real ones. */
const realStatements = new WeakMap<object, D1PreparedStatement>();

function countingStatement(statement: D1PreparedStatement): D1PreparedStatement {
	const proxy = new Proxy(statement, {
		get(target, prop) {
			if (prop === "bind") {
				return (...values: unknown[]) => countingStatement(target.bind(...values));
			}
			if (prop === "run" || prop === "all" || prop === "first" || prop === "raw") {
				return async (...args: unknown[]) => {
					counts.d1RoundTrips++;
					counts.d1Statements++;
					const method = target[prop] as (...a: unknown[]) => Promise<unknown>;
					const result = await timed(() => method.apply(target, args));
					if (prop === "run" || prop === "all") addMeta(result);
					return result;
				};
			}
			const value = Reflect.get(target, prop, target);
			return typeof value === "function" ? value.bind(target) : value;
		},
	});
	realStatements.set(proxy, statement);
	return proxy;
}

function countingD1(db: D1Database): D1Database {
	return new Proxy(db, {
		get(target, prop) {
			if (prop === "prepare") {
				return (query: string) => countingStatement(target.prepare(query));
			}
			if (prop === "batch") {
				return async (statements: D1PreparedStatement[]) => {
					counts.d1RoundTrips++;
					counts.d1Statements += statements.length;
					const real = statements.map((statement) => realStatements.get(statement) ?? statement);
					const results = await timed(() => target.batch(real));
					for (const result of results) addMeta(result);
					return results;
				};
			}
			if (prop === "exec") {
				return async (query: string) => {
					counts.d1RoundTrips++;
					const result = await timed(() => target.exec(query));
					counts.d1Statements += result.count;
					return result;
				};
			}
			const value = Reflect.get(target, prop, target);
			return typeof value === "function" ? value.bind(target) : value;
		},
	});
}

function countingKV(kv: KVNamespace): KVNamespace {
	return new Proxy(kv, {
		get(target, prop) {
			const value = Reflect.get(target, prop, target);
			if (typeof value !== "function") return value;
			return (...args: unknown[]) => {
				if (prop === "put" || prop === "delete") counts.kvWrites++;
				else if (prop === "get" || prop === "getWithMetadata" || prop === "list") {
					counts.kvReads++;
				}
				return value.apply(target, args);
			};
		},
	});
}

// One counting env per real env: the Worker caches its parsed settings per env object.
const countingEnvs = new WeakMap<Env, Env>();

function countingEnv(env: Env): Env {
	let wrapped = countingEnvs.get(env);
	if (!wrapped) {
		wrapped = { ...env, DB: countingD1(env.DB), SUPPRESSIONS: countingKV(env.SUPPRESSIONS) };
		countingEnvs.set(env, wrapped);
	}
	return wrapped;
}

async function countRequest(request: Request, env: Env, ctx: ExecutionContext): Promise<Response> {
	const url = new URL(request.url);
	const path = url.searchParams.get("path");
	if (!path?.startsWith("/"))
		return Response.json({ error: "path=/... required" }, { status: 400 });
	const headers = new Headers(request.headers);
	const body = request.method === "GET" || request.method === "HEAD" ? null : await request.text();
	const inner = new Request(new URL(path, url), { method: request.method, headers, body });
	const pending: Promise<unknown>[] = [];
	const countingCtx = {
		waitUntil(promise: Promise<unknown>) {
			counts.waitUntil++;
			pending.push(promise);
			ctx.waitUntil(promise);
		},
		passThroughOnException() {
			ctx.passThroughOnException();
		},
		props: ctx.props,
	} as ExecutionContext;
	counts = zero();
	const response = await worker.fetch(
		inner as Parameters<typeof worker.fetch>[0],
		countingEnv(env),
		countingCtx,
	);
	const text = await response.text();
	// The KV copy is written after the response, in waitUntil: wait for it before reporting.
	await Promise.allSettled(pending);
	let parsed: unknown = text;
	try {
		parsed = JSON.parse(text);
	} catch {}
	return Response.json({ status: response.status, body: parsed, counts });
}

/** A delivered event as Tencent sends it, with the fields of the documentation's samples. */
function sampleEvent(i: number): Record<string, unknown> {
	return {
		event: "delivered",
		email: `recipient.${i}@example.com`,
		bulkId: "qcloudses-30-251200670-date-20260101120000-8jolHvR2XcXC1",
		timestamp: 1767225600 + i,
		sentTimestamp: 1767225595 + i,
		reason: "",
		bounceType: "",
		username: "251200670",
		from: "noreply@mail.example.com",
		fromDomain: "mail.example.com",
		templateId: 123456,
		subject: "=?UTF-8?B?5oKo55qE6K6i5Y2V5bey5Y+R6LSn?=",
		messageId: `${i.toString(16).padStart(8, "0")}-7704-48a8-af36-2b9e83e767ec@mail.example.com`,
		"X-Tencentcloudses-Cb-Custom": "campaign-42",
	};
}

/**
 * Workerd's clock may only advance at I/O, so time `n` calls between two awaited I/O fences and
 * subtract the time of the fences alone. Answers the microseconds per event of every round.
 */
async function measureCpu(url: URL): Promise<Response> {
	const n = Number(url.searchParams.get("n") ?? 2000);
	const rounds = Number(url.searchParams.get("rounds") ?? 7);
	const fence = () => scheduler.wait(0);
	// The bodies' bytes, as a callback receives them; the timed loop reads each as the route does.
	const encoder = new TextEncoder();
	const bodies = Array.from({ length: n }, (_, i) =>
		encoder.encode(JSON.stringify(sampleEvent(i))),
	);
	const receivedAt = Math.floor(Date.now() / 1000);
	const read = (bytes: Uint8Array) =>
		parseCallback(parseJsonBytes(bytes, parseCallbackJson), 100, receivedAt);
	for (const body of bodies.slice(0, 2000)) await read(body); // warm-up
	const micros: number[] = [];
	const fenceMs: number[] = [];
	for (let round = 0; round < rounds; round++) {
		await fence();
		let start = performance.now();
		await fence();
		const empty = performance.now() - start;
		await fence();
		start = performance.now();
		for (const body of bodies) await read(body);
		await fence();
		const loop = performance.now() - start;
		fenceMs.push(empty);
		micros.push(((loop - empty) * 1000) / n);
	}
	return Response.json({ n, micros, fenceMs });
}

/** One run of the retention cron's pruning with every event past its retention, counted. */
async function countRetention(env: Env): Promise<Response> {
	const settings = loadSettings(env).retention;
	const farFuture = Math.floor(Date.now() / 1000) + (settings.eventDays + 365) * 86_400;
	counts = zero();
	const result = await pruneStorage(countingEnv(env).DB, farFuture, settings);
	return Response.json({ ...result, counts });
}

export default {
	async fetch(request, env, ctx) {
		const url = new URL(request.url);
		if (url.pathname === "/__bench/count") return countRequest(request, env, ctx);
		if (url.pathname === "/__bench/retention") return countRetention(env);
		if (url.pathname === "/__bench/cpu") return measureCpu(url);
		return worker.fetch(request, env, ctx);
	},
} satisfies ExportedHandler<Env>;
