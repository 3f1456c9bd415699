import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { KV_WRITE_SETTLE_SECONDS } from "../../src/cron/edge-repair";
import { DRAINED_KEY, LAG_KEY } from "../../src/suppressions/edge-lag";
import { call, countingKv, postCallback, resetDatabase, runCron, tokens } from "../helpers";

/**
 * Every path that writes, failed at each of its D1 calls in turn (refused, or committed with its
 * answer lost, as D1's `Network connection lost.` does) and at each of its KV writes, then retried
 * as its sender would (Tencent on a 5xx, an operator on an error, the cron at its next run) and
 * settled by the cron: the end state must be that of one clean run. Nothing may be lost, counted
 * twice or left wrong in KV, and a transient failure must never answer 4xx.
 */

type Mode = "refuse" | "lose";
interface Fault {
	d1?: { at: number; mode: Mode };
	kvWrite?: number;
}

/**
 * The test bindings, counting D1 calls (a batch, or a statement run on its own) and KV writes
 * (put, delete), failing the ones `fault` names: a refused D1 call runs nothing, a lost one
 * commits and then throws.
 */
function faultyEnv(fault: Fault = {}) {
	const counts = { d1: 0, kvWrites: 0 };
	const d1Call = async <T>(run: () => Promise<T>): Promise<T> => {
		if (fault.d1?.at !== ++counts.d1) return run();
		if (fault.d1.mode === "refuse") throw new Error("D1_ERROR: injected refusal");
		await run();
		throw new Error("D1_ERROR: Network connection lost.");
	};
	const wrap = (statement: D1PreparedStatement): D1PreparedStatement => {
		for (const method of ["all", "first", "run", "raw"] as const) {
			const real = Reflect.get(statement, method) as (...args: unknown[]) => Promise<unknown>;
			Object.defineProperty(statement, method, {
				value: (...args: unknown[]) => d1Call(() => Reflect.apply(real, statement, args)),
			});
		}
		const bind = statement.bind.bind(statement);
		Object.defineProperty(statement, "bind", {
			value: (...values: unknown[]) => wrap(bind(...values)),
		});
		return statement;
	};
	const db = new Proxy(env.DB, {
		get(target, property) {
			if (property === "prepare") return (sql: string) => wrap(target.prepare(sql));
			if (property === "batch") {
				return (statements: D1PreparedStatement[]) => d1Call(() => target.batch(statements));
			}
			const value = Reflect.get(target, property);
			return typeof value === "function" ? value.bind(target) : value;
		},
	});
	const kv = new Proxy(env.SUPPRESSIONS, {
		get(target, property) {
			const value = Reflect.get(target, property);
			if (property !== "put" && property !== "delete") {
				return typeof value === "function" ? value.bind(target) : value;
			}
			return (...args: unknown[]) =>
				++counts.kvWrites === fault.kvWrite
					? Promise.reject(new Error("KV: injected failure (429 Too Many Requests)"))
					: Reflect.apply(value, target, args);
		},
	});
	return { counts, env: { ...env, DB: db, SUPPRESSIONS: kv } as Env };
}

const NOW = Math.floor(Date.now() / 1000);
/** When the events occurred: fixed, so that expiries derived from them are the same every run. */
const T = NOW - 86_400;
const FROM = "news.example.com";
const iso = (seconds: number) => new Date(seconds * 1000).toISOString();
const admin = { authorization: `Bearer ${tokens.admin}` };

const hard = (email: string, at = T) => ({
	event: "bounce",
	bounceType: "hard_bounce",
	email,
	timestamp: at,
	reason: "550 5.1.1 no such user",
	fromDomain: FROM,
	bulkId: "qcloudses-30-1-date-20260101000000-a",
});
const soft = (email: string, at: number) => ({
	event: "bounce",
	bounceType: "soft_bounce",
	email,
	timestamp: at,
	reason: "452 4.2.2 mailbox full",
	fromDomain: FROM,
});
const other = (event: string, email: string, at = T) => ({
	event,
	email,
	timestamp: at,
	fromDomain: FROM,
});

async function post(body: unknown, testEnv: Env = env): Promise<void> {
	const response = await postCallback(body, { env: testEnv });
	if (response.status !== 200) throw new Error(`setup callback: ${await response.text()}`);
}

async function put(email: string, body: Record<string, unknown>, testEnv: Env = env) {
	return call(
		`/v1/suppressions/${encodeURIComponent(email)}`,
		{ method: "PUT", headers: admin, body: JSON.stringify(body) },
		testEnv,
	);
}

async function importBody(type: string, body: string, testEnv: Env) {
	return call(
		"/v1/suppressions/import",
		{ method: "POST", headers: { ...admin, "content-type": type }, body },
		testEnv,
	);
}

/** The scheduled time of the cron run a scenario makes, an hour on: it retires what expires. */
const CRON_AT = (NOW + 3600) * 1000;
/** An operator's entry that the cron run at CRON_AT retires. */
const EXPIRING = NOW + 1800;

interface Scenario {
	/** Who retries a failure: Tencent (a callback), an operator, or the cron's next run. */
	kind: "callback" | "operator" | "cron";
	/** Addresses whose pre-send check is compared. */
	emails: string[];
	setup?: () => Promise<string | undefined>;
	/** The write, through `testEnv`; a cron run answers 200, or 500 when it throws. */
	act: (testEnv: Env, context: string | undefined) => Promise<Response>;
}

const SCENARIOS: Record<string, Scenario> = {
	"a hard bounce": {
		kind: "callback",
		emails: ["hard@example.com"],
		act: (testEnv) => postCallback(hard("hard@example.com"), { env: testEnv }),
	},
	"a soft bounce that reaches the limit": {
		kind: "callback",
		emails: ["soft@example.com"],
		setup: async () => {
			await post([soft("soft@example.com", T), soft("soft@example.com", T + 60)]);
			return undefined;
		},
		act: (testEnv) => postCallback(soft("soft@example.com", T + 120), { env: testEnv }),
	},
	"a spam report": {
		kind: "callback",
		emails: ["spam@example.com"],
		act: (testEnv) => postCallback(other("spamreport", "spam@example.com"), { env: testEnv }),
	},
	"an unsubscribe": {
		kind: "callback",
		emails: ["unsub@example.com"],
		act: (testEnv) => postCallback(other("unsubscribe", "unsub@example.com"), { env: testEnv }),
	},
	"an array callback": {
		kind: "callback",
		emails: [
			"recheck@example.com",
			"dup@example.com",
			"a-hard@example.com",
			"a-spam@example.com",
			"a-unsub@example.com",
			"a-open@example.com",
		],
		setup: async () => {
			await post([0, 60, 120].map((s) => soft("recheck@example.com", T + s)));
			await post(hard("dup@example.com"));
			return undefined;
		},
		act: (testEnv) =>
			postCallback(
				[
					// Breaks recheck@'s run of soft bounces: decided again in a second round trip.
					other("delivered", "recheck@example.com", T + 90),
					hard("dup@example.com"),
					hard("a-hard@example.com"),
					other("spamreport", "a-spam@example.com"),
					other("unsubscribe", "a-unsub@example.com"),
					other("open", "a-open@example.com"),
				],
				{ env: testEnv },
			),
	},
	"a replay of a rejected callback": {
		kind: "operator",
		emails: ["replay-a@example.com", "replay-b@example.com"],
		setup: async () => {
			const events = [other("spamreport", "replay-a@example.com"), hard("replay-b@example.com")];
			const refused = await postCallback(events, { env: { ...env, MAX_EVENTS_PER_REQUEST: "1" } });
			if (refused.status !== 400) throw new Error(`setup: ${refused.status}`);
			const row = await env.DB.prepare("SELECT id FROM rejected_callbacks").first<{ id: string }>();
			return row?.id;
		},
		act: (testEnv, id) =>
			call(`/v1/rejected/${id}/replay`, { method: "POST", headers: admin }, testEnv),
	},
	"a PUT": {
		kind: "operator",
		emails: ["put@example.com"],
		setup: async () => {
			await put("put@example.com", { reason: "first" });
			return undefined;
		},
		act: (testEnv) =>
			put("put@example.com", { reason: "second", expiresAt: iso(NOW + 30 * 86_400) }, testEnv),
	},
	"a DELETE of every entry": {
		kind: "operator",
		emails: ["del@example.com"],
		setup: async () => {
			await post([hard("del@example.com"), other("unsubscribe", "del@example.com")]);
			return undefined;
		},
		act: (testEnv) =>
			call("/v1/suppressions/del%40example.com", { method: "DELETE", headers: admin }, testEnv),
	},
	"a DELETE of one scope": {
		kind: "operator",
		emails: ["del@example.com"],
		setup: async () => {
			await post([hard("del@example.com"), other("unsubscribe", "del@example.com")]);
			return undefined;
		},
		act: (testEnv) =>
			call(
				`/v1/suppressions/del%40example.com?list=unsubscribe&scope=${FROM}`,
				{ method: "DELETE", headers: admin },
				testEnv,
			),
	},
	"an erasure with the entries": {
		kind: "operator",
		emails: ["erase@example.com"],
		setup: async () => {
			await post([hard("erase@example.com"), other("open", "erase@example.com")]);
			await put("erase@example.com", { reason: "by hand" });
			return undefined;
		},
		act: (testEnv) =>
			call(
				"/v1/addresses/erase%40example.com?suppressions=true",
				{ method: "DELETE", headers: admin },
				testEnv,
			),
	},
	"an erasure of the events alone": {
		kind: "operator",
		emails: ["erase@example.com"],
		setup: async () => {
			await post([hard("erase@example.com"), other("open", "erase@example.com")]);
			return undefined;
		},
		act: (testEnv) =>
			call("/v1/addresses/erase%40example.com", { method: "DELETE", headers: admin }, testEnv),
	},
	"a CSV import": {
		kind: "operator",
		emails: ["imp-old@example.com", "imp1@example.com", "imp2@example.com"],
		setup: async () => {
			await put("imp-old@example.com", { reason: "old" });
			return undefined;
		},
		act: (testEnv) =>
			importBody(
				"text/csv",
				[
					"email,list,scope,reason,source,created_at,updated_at,expires_at",
					"imp-old@example.com,manual,*,new,api,,,",
					"imp1@example.com,manual,*,,api,,,",
					`imp2@example.com,unsubscribe,${FROM},,event,,,`,
					"not an address,manual,*,,api,,,",
				].join("\r\n"),
				testEnv,
			),
	},
	"an NDJSON import": {
		kind: "operator",
		emails: ["imp-old@example.com", "imp1@example.com", "imp2@example.com"],
		setup: async () => {
			await put("imp-old@example.com", { reason: "old" });
			return undefined;
		},
		act: (testEnv) =>
			importBody(
				"application/x-ndjson",
				[
					{
						email: "imp-old@example.com",
						list: "manual",
						scope: "*",
						reason: "new",
						source: "api",
					},
					{ email: "imp1@example.com", list: "complaint", scope: "*", source: "event" },
					{ email: "imp2@example.com", list: "manual", scope: FROM, source: "api" },
				]
					.map((line) => JSON.stringify(line))
					.join("\n"),
				testEnv,
			),
	},
	"a cron run": {
		kind: "cron",
		emails: ["old@example.com", "exp@example.com", "rc@example.com", "gone@example.com"],
		setup: async () => {
			// Events past retention, with a rejected callback past its own.
			await post([hard("old@example.com"), other("delivered", "kept@example.com")]);
			await env.DB.prepare(
				"UPDATE events SET received_at = received_at - 100 * 86400 WHERE email = 'old@example.com'",
			).run();
			await postCallback("{");
			await env.DB.prepare(
				"UPDATE rejected_callbacks SET received_at = received_at - 40 * 86400",
			).run();
			// An entry that expires before the run.
			await put("exp@example.com", { reason: "for a while", expiresAt: iso(EXPIRING) });
			// A soft-bounce run broken by a delivery whose recheck the callback could not make.
			await post([0, 60, 120].map((s) => soft("rc@example.com", T + s)));
			const noRecheck = faultyEnv({ d1: { at: 2, mode: "refuse" } }).env;
			await post(other("delivered", "rc@example.com", T + 90), noRecheck);
			// A key lost, a key gone stale, and an orphan key.
			await env.SUPPRESSIONS.delete("s:old@example.com");
			await env.SUPPRESSIONS.put("s:exp@example.com", "[]");
			await env.SUPPRESSIONS.put("s:gone@example.com", "[]");
			return undefined;
		},
		act: async (testEnv) => {
			try {
				await runCron(CRON_AT, testEnv);
				return new Response(null, { status: 200 });
			} catch {
				return new Response(null, { status: 500 });
			}
		},
	},
};

/** A KV value or lookup entry without its wall-clock fields. */
function withoutClock(value: unknown): unknown {
	if (Array.isArray(value)) return value.map(withoutClock);
	if (value && typeof value === "object") {
		const { createdAt, updatedAt, ...rest } = value as Record<string, unknown>;
		return rest;
	}
	return value;
}

async function rows(sql: string): Promise<unknown[]> {
	return (await env.DB.prepare(sql).all()).results;
}

/** The pre-send check of `emails` for FROM, as another isolate (reading the lag mark) answers it. */
async function checkAnswers(emails: string[]): Promise<unknown> {
	const response = await call(
		"/v1/suppressions/check",
		{
			method: "POST",
			headers: { authorization: `Bearer ${tokens.lookup}` },
			body: JSON.stringify({ emails, fromDomain: FROM }),
		},
		countingKv().env,
	);
	if (response.status !== 200) throw new Error(`check answered ${response.status}`);
	const { results } = (await response.json()) as { results: Array<{ suppressed: boolean }> };
	return results;
}

/** Everything a write leaves, less wall-clock times, the lag mark and the cron's drained second. */
async function endState(emails: string[]) {
	const keys: Record<string, unknown> = {};
	for (const { name } of (await env.SUPPRESSIONS.list()).keys) {
		if (name === LAG_KEY || name === DRAINED_KEY) continue;
		const text = await env.SUPPRESSIONS.get(name);
		keys[name] = text === null ? null : withoutClock(JSON.parse(text));
	}
	const stats = await call("/v1/stats", { headers: { authorization: `Bearer ${tokens.lookup}` } });
	return {
		events: await rows(
			`SELECT id, event, email, bulk_id, bounce_type, reason, from_domain, occurred_at FROM events
			ORDER BY id`,
		),
		rejected: await rows(
			`SELECT status, code, message, issues, hex(body) AS body, body_bytes,
				replayed_at IS NOT NULL AS replayed, replay_stored FROM rejected_callbacks
			ORDER BY body, code`,
		),
		rejectedBytes: await rows("SELECT bytes FROM rejected_storage"),
		suppressions: await rows(
			`SELECT email, list, scope, origin, reason, event_count, last_event_at, bulk_id, event_id,
				expires_at FROM suppressions ORDER BY email, list, scope, origin`,
		),
		removals: await rows("SELECT email, list, scope FROM suppression_removals ORDER BY 1, 2, 3"),
		history: await rows(
			`SELECT email, iif(action = 'expired', at, NULL) AS at, action, list, scope, source, event_id,
				note FROM suppression_history ORDER BY email, seq`,
		),
		dailyStats: await rows(
			"SELECT * FROM daily_stats ORDER BY day, from_domain, event, bounce_type",
		),
		pending: await rows("SELECT email FROM edge_pending ORDER BY email"),
		recheck: await rows("SELECT email FROM soft_bounce_recheck ORDER BY email"),
		keys,
		stats: await stats.json(),
		check: await checkAnswers(emails),
	};
}

/** Runs the cron until what the write left has settled (its changes older than KV's settle time). */
async function settle(scenario: Scenario): Promise<void> {
	const from = scenario.kind === "cron" ? CRON_AT + 300_000 : Date.now();
	for (const step of [1, 2]) {
		await runCron(from + (KV_WRITE_SETTLE_SECONDS + 1) * 1000 * step);
	}
}

interface Run {
	/** The write's answer, and the retry's when it failed. */
	statuses: number[];
	/** The pre-send check right after the write (and its retry), before the cron ran. */
	interim: Array<{ suppressed: boolean }>;
	end: Awaited<ReturnType<typeof endState>>;
}

/** One run of a scenario through `testEnv`, retried once with healthy bindings when it failed. */
async function runScenario(scenario: Scenario, testEnv: () => Env): Promise<Run> {
	await resetDatabase();
	const context = await scenario.setup?.();
	const first = await scenario.act(testEnv(), context);
	const statuses = [first.status];
	const failed = first.status >= 300;
	if (failed) await expectRetryable(scenario, first);
	// Tencent retries a failure; the cron runs again in any case.
	if (failed || scenario.kind === "cron") {
		const retry = await scenario.act(env, context);
		statuses.push(retry.status);
	}
	const interim = (await checkAnswers(scenario.emails)) as Array<{ suppressed: boolean }>;
	await settle(scenario);
	return { statuses, interim, end: await endState(scenario.emails) };
}

/** A failure answers in the contract's error shape, and never with a status that ends retries. */
async function expectRetryable(scenario: Scenario, response: Response): Promise<void> {
	if (scenario.kind === "cron") return;
	const allowed = scenario.kind === "callback" ? [503] : [500, 503];
	expect(allowed, `answered ${response.status}`).toContain(response.status);
	expect(response.headers.get("content-type")).toBe("application/json; charset=utf-8");
	const body = (await response.json()) as { error: { code: string; message: string } };
	if (response.status === 503) {
		expect(body.error.code).toBe("storage_unavailable");
		expect(response.headers.get("retry-after")).toBe("30");
	} else expect(body).toEqual({ error: { code: "internal", message: "Internal error" } });
}

/** Fails each D1 call and each KV write of the scenario in turn; every run must end as the clean one. */
async function expectConvergence(name: string): Promise<void> {
	const scenario = SCENARIOS[name] as Scenario;
	let counts = { d1: 0, kvWrites: 0 };
	const clean = await runScenario(scenario, () => {
		const counting = faultyEnv();
		counts = counting.counts;
		return counting.env;
	});
	expect(
		clean.statuses.every((status) => status < 300),
		`${name}: clean run`,
	).toBe(true);
	expect(counts.d1, `${name}: D1 calls of a clean run`).toBeGreaterThan(0);
	const faults: Array<[string, Fault]> = [];
	for (let n = 1; n <= counts.d1; n++) {
		faults.push([`D1 call ${n} refused`, { d1: { at: n, mode: "refuse" } }]);
		faults.push([`D1 call ${n} committed, answer lost`, { d1: { at: n, mode: "lose" } }]);
	}
	// One write more than the clean run makes: a failure may add the lag mark's.
	for (let n = 1; n <= counts.kvWrites + 1; n++)
		faults.push([`KV write ${n} refused`, { kvWrite: n }]);
	for (const [what, fault] of faults) {
		const label = `${name}, ${what} (of ${counts.d1} D1 calls, ${counts.kvWrites} KV writes)`;
		const run = await runScenario(scenario, () => faultyEnv(fault).env);
		expect(run.statuses.at(-1), `${label}: the retry's answer`).toBeLessThan(300);
		// An address the clean run suppresses at once is suppressed at once after the retry too.
		clean.interim.forEach((answer, i) => {
			if (answer.suppressed) {
				expect(run.interim[i], `${label}: ${scenario.emails[i]} before the cron`).toMatchObject({
					suppressed: true,
				});
			}
		});
		expect(run.end, `${label}: end state`).toEqual(clean.end);
	}
}

describe("every write, failed at each D1 call and KV write and retried, ends as one clean run", () => {
	for (const name of Object.keys(SCENARIOS)) {
		it(name, () => expectConvergence(name));
	}
});
