import { env } from "cloudflare:workers";
import fc from "fast-check";
import { afterEach, describe, expect, it, vi } from "vitest";
import { KV_WRITE_SETTLE_SECONDS } from "../../src/cron/edge-repair";
import { EDGE_SYNC_AT_ONCE } from "../../src/suppressions/edge";
import { edgeKey } from "../../src/suppressions/edge-format";
import { forgetEdgeLag, LAG_KEY, LAG_SECONDS } from "../../src/suppressions/edge-lag";
import { call, lookup, postCallback, resetDatabase, runCron, tokens } from "../helpers";

/**
 * A stateful property of the pre-send answers that holds whether or not the cron has run
 * (docs/storage.md, `edge:lagging`): whatever leaves address keys unwritten, or writes one over a
 * later change, marks KV as lagging, and while the mark lasts an answer KV would give as
 * deliverable comes from D1. So in one isolate (one KV binding, whose memo of the mark every
 * request shares), after any sequence of callbacks, replays, PUTs, DELETEs, erasures, imports
 * (some past EDGE_SYNC_AT_ONCE addresses) and cron runs, with KV refusing the writes of address
 * keys at some steps and D1 refusing the edge sync's read at others, an address the consistent
 * lookup calls suppressed for a sender (or for none) is never called deliverable by the edge
 * lookup or by the check for that sender. The reverse is allowed: KV may keep an entry D1 no
 * longer has, which errs on the safe side.
 *
 * Some steps run interleaved, as concurrent requests do: at one of its KV operations on an
 * address key (or on the mark, for a lookup), before the operation or after it but before its
 * answer comes back, another whole step runs. The invariant is checked once both have ended.
 *
 * Left out: KV refusing the mark's own write too. Then the keys wait for the cron unmarked, as
 * docs/storage.md says (`edge lag mark failed`), and the invariant is not claimed. The clock moves
 * less than LAG_SECONDS in all, since a mark lapses after that on purpose, once the cron has
 * written the keys: here it may not have, as D1 queues changes by its own clock, not the test's.
 */

// Two spellings of one address, another address, and one too long for a plain key (`h:`).
const LONG_LABEL = "漢".repeat(60);
const LONG = `${"a".repeat(22)}@${LONG_LABEL}.${LONG_LABEL}.${"漢".repeat(41)}.com`;
const SPELLINGS = ["ann@example.com", "ANN@Example.COM", "bo@example.org", LONG];
const DOMAINS = ["news.example.com", "shop.example.net"];
// An unsubscribe's fromDomain as a sender may spell it; lookups name it as DOMAINS[0].
const SENT_DOMAINS = [...DOMAINS, "News.Example.COM."];
// Addresses of the large imports and callbacks: more than one request writes to KV.
const BULK_MAX = EDGE_SYNC_AT_ONCE + 40;
const bulk = (i: number) => `bulk${i}@example.com`;
const BULK = Array.from({ length: BULK_MAX }, (_, i) => bulk(i));
// Also looked up one by one: some on each side of EDGE_SYNC_AT_ONCE.
const BULK_SAMPLE = [0, EDGE_SYNC_AT_ONCE - 1, EDGE_SYNC_AT_ONCE, BULK_MAX - 1].map(bulk);
const LISTS = ["manual", "bounce", "complaint", "unsubscribe"] as const;
const DAY = 86_400;
const SOFT_SUPPRESS = 14 * DAY;
// The clock moves at most this far in a run: every mark put in it still lasts at the end.
const MAX_ADVANCE = LAG_SECONDS - 60;

/**
 * What goes wrong at a step: KV refuses the writes of address keys (`kv`) or their reads
 * (`kvRead`: an import reads keys before it writes them), or D1 the edge sync's read (`d1`); or,
 * for a cron run, D1 refuses every statement once it has written a key (`late`), so that the run
 * fails after writing.
 */
type Fault = "none" | "kv" | "kvRead" | "d1" | "late";

type Callback = {
	event: "delivered" | "soft" | "hard" | "spamreport" | "unsubscribe";
	spelling: number;
	domain: number;
	ago: number;
};

type Command =
	| { kind: "callback"; events: Callback[]; fault: Fault }
	| { kind: "repeat"; pick: number; fault: Fault }
	| { kind: "bulkCallback"; count: number; fault: Fault }
	| { kind: "refuse"; events: [Callback, Callback] }
	| { kind: "replay"; pick: number; fault: Fault }
	| {
			kind: "put";
			spelling: number;
			list: (typeof LISTS)[number];
			scope: number | null;
			expiresIn: number | null;
			longReason: boolean;
			fault: Fault;
	  }
	| {
			kind: "delete";
			spelling: number;
			list: (typeof LISTS)[number] | null;
			scope: number | null;
			fault: Fault;
	  }
	| { kind: "erase"; spelling: number; suppressions: boolean; fault: Fault }
	| {
			kind: "import";
			count: number;
			list: (typeof LISTS)[number];
			scope: number | null;
			expiresIn: number | null;
			core: boolean;
			source: "api" | "event";
			fault: Fault;
	  }
	| { kind: "reimport"; reason: boolean; fault: Fault }
	| { kind: "cron"; settle: boolean; fault: Fault }
	| { kind: "read"; spelling: number; sender: number; check: boolean; memo: boolean }
	| { kind: "advance"; seconds: number };

/**
 * Two steps at once: `inner` runs at the `at`th KV operation of `outer` (see {@link kv}), or, with
 * `same`, changes the outer's address (if both name one) at the outer's first operation on its key.
 */
type Concurrent = {
	kind: "concurrent";
	outer: Command;
	inner: Command;
	at: number;
	same: boolean;
	when: "before" | "after";
};

// Most steps go well: a step that fails marks KV for the rest of the run, past which little is tested.
const fault: fc.Arbitrary<Fault> = fc.constantFrom(
	"none",
	"none",
	"none",
	"none",
	"kv",
	"kvRead",
	"d1",
);
const spelling = fc.nat({ max: SPELLINGS.length - 1 });
const domainIndex = fc.nat({ max: DOMAINS.length - 1 });
const list = fc.constantFrom(...LISTS);
// Some entries run out within the run, so that the clock decides what applies.
const expiresIn = fc.option(fc.oneof(fc.integer({ min: 60, max: 600 }), fc.constant(10 * DAY)));
const callback: fc.Arbitrary<Callback> = fc.record({
	event: fc.constantFrom("delivered", "soft", "soft", "hard", "spamreport", "unsubscribe"),
	spelling,
	domain: fc.nat({ max: SENT_DOMAINS.length - 1 }),
	// Now, seconds apart, or so old that a soft-bounce entry runs out within the run.
	ago: fc.oneof(
		fc.constantFrom(0, 1, 60),
		fc.integer({ min: SOFT_SUPPRESS - 600, max: SOFT_SUPPRESS - 30 }),
	),
});
// A cron run, some after the changes so far have settled, so that it drains their addresses.
const cron: fc.Arbitrary<Command> = fc.record({
	kind: fc.constant("cron" as const),
	settle: fc.boolean(),
	fault: fc.constantFrom<Fault>("none", "none", "kv", "kvRead", "d1", "late"),
});
const single: fc.Arbitrary<Command> = fc.oneof(
	{
		weight: 6,
		arbitrary: fc.record({
			kind: fc.constant("callback" as const),
			// Mostly one event a request; some carry a soft bounce and a delivery together.
			events: fc.oneof(
				{ weight: 3, arbitrary: fc.tuple(callback) },
				{ weight: 1, arbitrary: fc.array(callback, { minLength: 2, maxLength: 3 }) },
			),
			fault,
		}),
	},
	{
		weight: 1,
		arbitrary: fc.record({ kind: fc.constant("repeat" as const), pick: fc.nat(), fault }),
	},
	{
		weight: 1,
		arbitrary: fc.record({
			kind: fc.constant("bulkCallback" as const),
			count: fc.integer({ min: EDGE_SYNC_AT_ONCE - 2, max: BULK_MAX }),
			fault,
		}),
	},
	{
		weight: 1,
		arbitrary: fc.record({
			kind: fc.constant("refuse" as const),
			events: fc.tuple(callback, callback),
		}),
	},
	{
		weight: 1,
		arbitrary: fc.record({ kind: fc.constant("replay" as const), pick: fc.nat(), fault }),
	},
	{
		weight: 3,
		arbitrary: fc.record({
			kind: fc.constant("put" as const),
			spelling,
			list,
			scope: fc.option(domainIndex),
			expiresIn,
			// Three such entries pass what a KV value holds: the key then tells readers to read D1.
			longReason: fc.boolean(),
			fault,
		}),
	},
	{
		weight: 2,
		arbitrary: fc.record({
			kind: fc.constant("delete" as const),
			spelling,
			list: fc.option(list),
			scope: fc.option(domainIndex),
			fault,
		}),
	},
	{
		weight: 1,
		arbitrary: fc.record({
			kind: fc.constant("erase" as const),
			spelling,
			suppressions: fc.boolean(),
			fault,
		}),
	},
	{
		weight: 2,
		arbitrary: fc.record({
			kind: fc.constant("import" as const),
			count: fc.oneof(
				fc.integer({ min: 0, max: 3 }),
				fc.integer({ min: EDGE_SYNC_AT_ONCE - 2, max: BULK_MAX }),
			),
			list,
			scope: fc.option(domainIndex),
			expiresIn,
			core: fc.boolean(),
			source: fc.constantFrom("api", "event"),
			fault,
		}),
	},
	{
		weight: 1,
		arbitrary: fc.record({
			kind: fc.constant("reimport" as const),
			reason: fc.boolean(),
			fault,
		}),
	},
	{
		weight: 1,
		arbitrary: cron,
	},
	{
		weight: 2,
		arbitrary: fc.record({
			kind: fc.constant("advance" as const),
			seconds: fc.oneof(fc.integer({ min: 1, max: 100 }), fc.integer({ min: 100, max: 400 })),
		}),
	},
);
// A lookup or a check, only ever the outer of two steps at once: a reader that a writer crosses.
// Without `memo` the isolate's memo of the mark has run out, so the reader reads the mark too.
const read: fc.Arbitrary<Command> = fc.record({
	kind: fc.constant("read" as const),
	spelling,
	sender: fc.nat({ max: DOMAINS.length }),
	check: fc.boolean(),
	memo: fc.boolean(),
});
// Steps that make KV operations of their own, to be crossed.
const writer = single.filter((step) => step.kind !== "advance" && step.kind !== "refuse");
// Steps that change one address, which another change of it may cross.
const addressed = single.filter(
	(step) =>
		step.kind === "callback" ||
		step.kind === "put" ||
		step.kind === "delete" ||
		step.kind === "erase",
);
const command: fc.Arbitrary<Command | Concurrent> = fc.oneof(
	{ weight: 2, arbitrary: single },
	// Two changes of one address, the inner one before or after the outer one's key write.
	{
		weight: 1,
		arbitrary: fc.record({
			kind: fc.constant("concurrent" as const),
			outer: addressed,
			inner: addressed,
			at: fc.constant(1),
			same: fc.constant(true),
			when: fc.constantFrom("before", "before", "after"),
		}),
	},
	{
		weight: 1,
		arbitrary: fc.record({
			kind: fc.constant("concurrent" as const),
			outer: fc.oneof(
				{ weight: 4, arbitrary: writer },
				{ weight: 1, arbitrary: read },
				{ weight: 1, arbitrary: cron },
			),
			inner: writer,
			// Most writers of one address make one or two operations.
			at: fc.oneof(
				{ weight: 3, arbitrary: fc.constant(1) },
				{ weight: 2, arbitrary: fc.integer({ min: 2, max: 6 }) },
			),
			same: fc.boolean(),
			when: fc.constantFrom("before", "after"),
		}),
	},
);

const admin = { authorization: `Bearer ${tokens.admin}` };
const nowSeconds = () => Math.floor(Date.now() / 1000);
const normal = (value: string) => value.trim().normalize("NFC").toLowerCase();

/** What a step's fault switches on: read by the one KV binding and D1 binding of the isolate. */
const faults = { kv: false, kvRead: false, d1: false, late: false, d1All: false };
const addressKey = (key: unknown) =>
	(Array.isArray(key) ? key : [key]).some(
		(name) => typeof name === "string" && (name.startsWith("s:") || name.startsWith("h:")),
	);

/**
 * Another step, due at the `left`th KV operation from now on an address key (or on the mark,
 * when `mark` is on), `before` that operation or `after` it but before its answer.
 */
let crossing: {
	left: number;
	/** The one key whose operation it waits for, if any. */
	key: string | null;
	when: "before" | "after";
	mark: boolean;
	run: () => Promise<void>;
} | null = null;

/** Runs the crossing step if `key` makes its operation the one it waits for. */
async function cross(key: unknown, when: "before" | "after"): Promise<void> {
	if (!crossing || crossing.when !== when) return;
	if (crossing.key !== null) {
		if (!(Array.isArray(key) ? key : [key]).includes(crossing.key)) return;
	} else if (!addressKey(key) && !(crossing.mark && key === LAG_KEY)) return;
	if (--crossing.left > 0) return;
	const { run } = crossing;
	crossing = null;
	await run();
}

// One KV binding for every request, as one isolate has: the lag mark's memo is kept per binding.
// It refuses the writes (or reads) of address keys (`s:`, `h:`) while `faults.kv` (or
// `faults.kvRead`) is on, never the mark's; turns D1 off at such a write while `faults.late` is
// on; and runs a crossing step at its operation.
const kv = new Proxy(env.SUPPRESSIONS, {
	get(target, property) {
		if (property === "put" || property === "delete" || property === "get") {
			const on = property === "get" ? () => faults.kvRead : () => faults.kv;
			return async (key: unknown, ...rest: unknown[]) => {
				await cross(key, "before");
				// The fault of the step that made the operation, not of one that crossed it.
				const refused = on() && addressKey(key);
				const result = refused
					? Promise.reject(new Error("KV: injected failure (429 Too Many Requests)"))
					: Reflect.apply(Reflect.get(target, property), target, [key, ...rest]);
				await result.catch(() => undefined);
				if (faults.late && property !== "get" && addressKey(key)) faults.d1All = true;
				await cross(key, "after");
				return result;
			};
		}
		const value = Reflect.get(target, property);
		return typeof value === "function" ? value.bind(target) : value;
	},
});
// D1 refuses the edge sync's read (its statement alone has a window over each address's
// entries) while `faults.d1` is on, and every statement while `faults.d1All` is.
const db = new Proxy(env.DB, {
	get(target, property) {
		if (property === "prepare") {
			return (sql: string) => {
				if (faults.d1All || (faults.d1 && sql.includes("PARTITION BY email"))) {
					throw new Error("D1_ERROR: injected");
				}
				return target.prepare(sql);
			};
		}
		const value = Reflect.get(target, property);
		return typeof value === "function" ? value.bind(target) : value;
	},
});
const isolate: Env = { ...env, SUPPRESSIONS: kv, DB: db };

/**
 * Runs `step` with its fault on, and the fault of the step it crossed, if any, back on after it.
 * A callback's own batch reads entries back as the sync does.
 */
async function withFault<T>(which: Fault, step: () => Promise<T>): Promise<T> {
	const before = { ...faults };
	faults.kv = which === "kv";
	faults.kvRead = which === "kvRead";
	faults.d1 = which === "d1";
	faults.late = which === "late";
	faults.d1All = false;
	try {
		return await step();
	} finally {
		Object.assign(faults, before);
	}
}

type Trace = { bodies: Record<string, unknown>[]; rejected: string[]; advanced: number };

function callbackBody(step: Callback): Record<string, unknown> {
	const body: Record<string, unknown> = {
		event: step.event === "soft" || step.event === "hard" ? "bounce" : step.event,
		email: SPELLINGS[step.spelling],
		timestamp: nowSeconds() - step.ago,
		fromDomain: SENT_DOMAINS[step.domain],
		bulkId: "qcloudses-30-251200670-date-20220601142439-8jolHvR2XcXC1",
	};
	if (step.event === "soft") body.bounceType = "soft_bounce";
	if (step.event === "hard") body.bounceType = "hard_bounce";
	return body;
}

async function post(body: unknown, which: Fault, testEnv: Env = isolate): Promise<void> {
	// The callback's own batch reads its entries back: a D1 fault there would refuse the
	// callback, not the sync, so a callback's D1 fault is its KV one.
	const response = await withFault(which === "d1" ? "kv" : which, () =>
		postCallback(body, { env: testEnv }),
	);
	expect(response.status, await response.clone().text()).toBe(200);
}

async function rejectedIds(): Promise<string[]> {
	const response = await call("/v1/rejected?limit=1000", { headers: admin }, isolate);
	const { rejected } = (await response.json()) as { rejected: Array<{ id: string }> };
	return rejected.map((row) => row.id);
}

function importLine(email: string, step: Extract<Command, { kind: "import" }>): string {
	const scope = step.list === "unsubscribe" || step.list === "manual" ? step.scope : null;
	const expires =
		step.expiresIn === null ? "" : new Date((nowSeconds() + step.expiresIn) * 1000).toISOString();
	// An operator's entry is never an event's.
	const source = step.list === "manual" ? "api" : step.source;
	return `${email},${step.list},${scope === null ? "*" : DOMAINS[scope]},imported,${source},,,${expires}`;
}

async function run(trace: Trace, step: Command): Promise<void> {
	switch (step.kind) {
		case "callback": {
			const bodies = step.events.map(callbackBody);
			trace.bodies.push(...bodies);
			await post(bodies.length === 1 ? bodies[0] : bodies, step.fault);
			return;
		}
		case "repeat": {
			const body = trace.bodies[step.pick % Math.max(trace.bodies.length, 1)];
			if (body) await post(body, step.fault);
			return;
		}
		case "bulkCallback": {
			const events = BULK.slice(0, step.count).map((email) => ({
				event: "spamreport",
				email,
				timestamp: nowSeconds(),
			}));
			await post(events, step.fault, { ...isolate, MAX_EVENTS_PER_REQUEST: "1000" } as Env);
			return;
		}
		case "refuse": {
			// Refused for MAX_EVENTS_PER_REQUEST 1; today's settings take it on replay.
			const before = new Set(await rejectedIds());
			const response = await postCallback(step.events.map(callbackBody), {
				env: { ...isolate, MAX_EVENTS_PER_REQUEST: "1" } as Env,
			});
			expect(response.status).toBe(400);
			trace.rejected.push(...(await rejectedIds()).filter((id) => !before.has(id)));
			return;
		}
		case "replay": {
			const id = trace.rejected[step.pick % Math.max(trace.rejected.length, 1)];
			if (id === undefined) return;
			const response = await withFault(step.fault === "d1" ? "kv" : step.fault, () =>
				call(`/v1/rejected/${id}/replay`, { method: "POST", headers: admin }, isolate),
			);
			expect(response.status, await response.clone().text()).toBe(200);
			return;
		}
		case "put": {
			const body = {
				list: step.list,
				scope: step.scope === null ? "*" : DOMAINS[step.scope],
				reason: step.longReason ? "漢".repeat(4096) : "by the test",
				expiresAt: step.expiresIn === null ? null : nowSeconds() + step.expiresIn,
			};
			const response = await withFault(step.fault, () =>
				call(
					`/v1/suppressions/${encodeURIComponent(SPELLINGS[step.spelling] as string)}`,
					{ method: "PUT", headers: admin, body: JSON.stringify(body) },
					isolate,
				),
			);
			expect(response.status, await response.clone().text()).toBe(200);
			return;
		}
		case "delete": {
			const query = new URLSearchParams();
			if (step.list !== null) query.set("list", step.list);
			if (step.scope !== null) query.set("scope", DOMAINS[step.scope] as string);
			const response = await withFault(step.fault, () =>
				call(
					`/v1/suppressions/${encodeURIComponent(SPELLINGS[step.spelling] as string)}?${query}`,
					{ method: "DELETE", headers: admin },
					isolate,
				),
			);
			expect(response.status, await response.clone().text()).toBe(200);
			return;
		}
		case "erase": {
			const email = encodeURIComponent(SPELLINGS[step.spelling] as string);
			const response = await withFault(step.fault, () =>
				call(
					`/v1/addresses/${email}${step.suppressions ? "?suppressions=true" : ""}`,
					{ method: "DELETE", headers: admin },
					isolate,
				),
			);
			expect(response.status, await response.clone().text()).toBe(200);
			return;
		}
		case "import": {
			const emails = [
				...(step.core ? [...new Set(SPELLINGS.map(normal))] : []),
				...BULK.slice(0, step.count),
			];
			const lines = emails.map((email) => importLine(email, step));
			const response = await withFault(step.fault, () =>
				call(
					"/v1/suppressions/import",
					{
						method: "POST",
						headers: { ...admin, "content-type": "text/csv" },
						body: [
							"email,list,scope,reason,source,created_at,updated_at,expires_at",
							...lines,
						].join("\n"),
					},
					isolate,
				),
			);
			expect(response.status, await response.clone().text()).toBe(200);
			expect(((await response.json()) as { failed: unknown[] }).failed).toEqual([]);
			return;
		}
		case "reimport": {
			// The export back in, as is (nothing changes) or with every reason changed (every
			// entry changes, an address's single-event and soft-bounce pair each into its own).
			const lines = (await exportText()).split("\n").filter((line) => line !== "");
			const body = lines
				.map((line) => {
					const entry = JSON.parse(line) as Record<string, unknown>;
					return JSON.stringify(step.reason ? { ...entry, reason: "reimported" } : entry);
				})
				.join("\n");
			const response = await withFault(step.fault, () =>
				call(
					"/v1/suppressions/import",
					{ method: "POST", headers: { ...admin, "content-type": "application/x-ndjson" }, body },
					isolate,
				),
			);
			expect(response.status, await response.clone().text()).toBe(200);
			expect(((await response.json()) as { failed: unknown[] }).failed, body).toEqual([]);
			return;
		}
		case "cron": {
			if (step.settle) await run(trace, { kind: "advance", seconds: KV_WRITE_SETTLE_SECONDS + 1 });
			// A run that KV or D1 fails may fail as a whole; it must still leave nothing unmarked.
			const ran = withFault(step.fault, () => runCron(Date.now(), isolate));
			if (step.fault === "none") await ran;
			else await ran.catch(() => undefined);
			return;
		}
		case "read": {
			const sender = step.sender === DOMAINS.length ? undefined : DOMAINS[step.sender];
			const email = SPELLINGS[step.spelling] as string;
			if (!step.memo) forgetEdgeLag(kv);
			if (step.check) await check([email], sender);
			else await lookup(email, query(sender, false), isolate);
			return;
		}
		case "advance": {
			const seconds = Math.min(step.seconds, MAX_ADVANCE - trace.advanced);
			trace.advanced += seconds;
			vi.setSystemTime((nowSeconds() + seconds) * 1000);
			return;
		}
	}
}

/** The spelling of the address a step changes or reads, if it names one. */
function addressOf(step: Command): number | null {
	if (step.kind === "callback") return step.events[0]?.spelling ?? null;
	return "spelling" in step ? step.spelling : null;
}

/** The step, naming the address of spelling `spelling` instead of its own. */
function withAddress(step: Command, spelling: number): Command {
	if (step.kind === "callback")
		return { ...step, events: step.events.map((event) => ({ ...event, spelling })) };
	return "spelling" in step ? { ...step, spelling } : step;
}

/**
 * Runs a step, or two at once: the inner one at the outer's `at`th KV operation on an address key
 * (or on the mark, for a reader), or with `same` at its first on its own address's key, or after
 * the outer if it makes no such operation. What the inner one throws is thrown after the outer
 * has ended, not into the outer's KV operation.
 */
async function runStep(trace: Trace, step: Command | Concurrent): Promise<void> {
	if (step.kind !== "concurrent") return run(trace, step);
	let failure: { error: unknown } | null = null;
	let ran = false;
	const address = addressOf(step.outer);
	const same = step.same && address !== null && addressOf(step.inner) !== null;
	const innerStep = same ? withAddress(step.inner, address as number) : step.inner;
	const inner = async () => {
		ran = true;
		await run(trace, innerStep).catch((error: unknown) => {
			failure = { error };
		});
	};
	crossing = {
		left: same ? 1 : step.at,
		key: same ? await edgeKey(normal(SPELLINGS[address as number] as string)) : null,
		when: step.when,
		mark: step.outer.kind === "read",
		run: inner,
	};
	try {
		await run(trace, step.outer);
	} finally {
		crossing = null;
	}
	if (!ran) await inner();
	if (failure) throw (failure as { error: unknown }).error;
}

const SENDERS = [undefined, ...DOMAINS];
const query = (fromDomain: string | undefined, consistent: boolean) => {
	const params = new URLSearchParams();
	if (fromDomain !== undefined) params.set("fromDomain", fromDomain);
	if (consistent) params.set("consistent", "true");
	const text = params.toString();
	return text === "" ? "" : `?${text}`;
};

async function check(emails: string[], fromDomain: string | undefined) {
	const response = await call(
		"/v1/suppressions/check",
		{
			method: "POST",
			headers: { authorization: `Bearer ${tokens.lookup}` },
			body: JSON.stringify(fromDomain === undefined ? { emails } : { emails, fromDomain }),
		},
		isolate,
	);
	expect(response.status).toBe(200);
	const { results } = (await response.json()) as {
		results: Array<{ email: string; suppressed: boolean }>;
	};
	return new Map(results.map((result) => [result.email, result.suppressed]));
}

/** The NDJSON export: every live entry, read from D1. */
async function exportText(): Promise<string> {
	const response = await call("/v1/suppressions/export?format=ndjson", { headers: admin }, isolate);
	expect(response.status).toBe(200);
	// Decoded here: the runtime warns of .text() on a type it does not know as text.
	return new TextDecoder().decode(await response.arrayBuffer());
}

/** D1's live entries (the export reads D1): address to the scopes suppressing it. */
async function truthOfBulk(): Promise<Map<string, string[]>> {
	const scopes = new Map<string, string[]>();
	for (const line of (await exportText()).split("\n")) {
		if (line === "") continue;
		const entry = JSON.parse(line) as { email: string; scope: string };
		scopes.set(entry.email, [...(scopes.get(entry.email) ?? []), entry.scope]);
	}
	return scopes;
}

/** The invariant, at one moment: D1 suppressed means suppressed at the edge and in the check. */
async function checkInvariant(label: string): Promise<void> {
	const bulkTruth = await truthOfBulk();
	for (const fromDomain of SENDERS) {
		const checked = await check([...SPELLINGS, ...BULK], fromDomain);
		for (const email of [...SPELLINGS, ...BULK_SAMPLE]) {
			const consistent = await lookup(email, query(fromDomain, true), isolate);
			if (!consistent.suppressed) continue;
			const where = `${label}: ${email} for ${fromDomain ?? "any sender"}, D1 has ${JSON.stringify(consistent.entries)}`;
			expect((await lookup(email, query(fromDomain, false), isolate)).suppressed, where).toBe(true);
			expect(checked.get(email), `check, ${where}`).toBe(true);
		}
		for (const email of BULK) {
			const scopes = bulkTruth.get(email) ?? [];
			if (
				!scopes.some((scope) => fromDomain === undefined || scope === "*" || scope === fromDomain)
			)
				continue;
			expect(checked.get(email), `${label}: check of ${email} for ${fromDomain}`).toBe(true);
		}
	}
}

/**
 * Interleavings run before the random ones: the search finds them only now and then, since a
 * mark put earlier in a sequence hides them for the rest of it.
 */
const CROSSINGS: Array<Array<Command | Concurrent>> = [
	// A cron run writes an address's key over a hard bounce that came after it read D1, then fails.
	[
		{
			kind: "put",
			spelling: 0,
			list: "manual",
			scope: 0,
			expiresIn: null,
			longReason: false,
			fault: "none",
		},
		{
			kind: "concurrent",
			outer: { kind: "cron", settle: false, fault: "late" },
			inner: {
				kind: "callback",
				events: [{ event: "hard", spelling: 0, domain: 0, ago: 0 }],
				fault: "none",
			},
			at: 1,
			same: false,
			when: "before",
		},
	],
	// A check reads the mark while a callback too large to write every key puts it.
	[
		{
			kind: "concurrent",
			outer: { kind: "read", spelling: 0, sender: 0, check: true, memo: false },
			inner: { kind: "bulkCallback", count: EDGE_SYNC_AT_ONCE + 1, fault: "none" },
			at: 1,
			same: false,
			when: "after",
		},
	],
];

describe("the edge never calls deliverable what D1 suppresses", () => {
	afterEach(() => {
		vi.useRealTimers();
	});

	// 50 sequences and the CROSSINGS take about 15 s on an idle 2-core machine (450 with other
	// seeds passed too; with writesOvertaken always false, each of four seeds failed within 25
	// sequences, the CROSSINGS left out): its own time limit, so that only a hang fails it.
	it("holds after every step of callbacks, replays, operator writes, erasures, imports and cron runs, some interleaved, with KV or D1 failing", async () => {
		const start = nowSeconds();
		await fc.assert(
			fc.asyncProperty(fc.array(command, { minLength: 1, maxLength: 7 }), async (commands) => {
				await resetDatabase();
				forgetEdgeLag(kv);
				vi.useFakeTimers({ toFake: ["Date"] });
				vi.setSystemTime(start * 1000);
				try {
					const trace: Trace = { bodies: [], rejected: [], advanced: 0 };
					for (const [i, step] of commands.entries()) {
						await runStep(trace, step);
						const kind =
							step.kind === "concurrent" ? `${step.inner.kind} in ${step.outer.kind}` : step.kind;
						await checkInvariant(`after step ${i} (${kind})`);
					}
				} finally {
					vi.useRealTimers();
				}
			}),
			{ numRuns: 50, seed: 20261124, examples: CROSSINGS.map((commands) => [commands]) },
		);
	}, 120_000);
});
