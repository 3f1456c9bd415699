import fc from "fast-check";
import { afterEach, describe, expect, it, vi } from "vitest";
import { KV_WRITE_SETTLE_SECONDS } from "../../src/cron/edge-repair";
import {
	call,
	countingKv,
	type EntryJson,
	getJson,
	type Lookup,
	lookup,
	postCallback,
	resetDatabase,
	runCron,
	tokens,
} from "../helpers";

/**
 * A model-free stateful property: random sequences of callbacks, operator writes, erasures,
 * imports, clock moves and cron runs, checked against invariants that follow from README.md and
 * docs/storage.md, never against a re-implementation of the policy. Some commands make KV refuse
 * every write, as a failed edge write would, so the cron's repair is what the settled checks see.
 *
 * 1. After a cron run later than every change by more than the KV settle time, the edge lookup
 *    equals the consistent one for every spelling, with and without each `fromDomain`.
 * 2. There, the check answers what the consistent lookup does (suppressed and lists).
 * 3. Importing the current export into the same database reports every line unchanged.
 * 4. Every live entry has `createdAt` <= `updatedAt` <= now, and no expiry at or before now.
 * 5. The last history line of a live entry's list and scope is `added` or `renewed`, where one
 *    origin alone wrote that list and scope (docs/storage.md: a hard bounce, a soft-bounce run and
 *    an operator's entry are separate rows of one list and scope, and one may expire after the
 *    other was added).
 * 6. No event is listed twice, and each address lists as many events as its callbacks reported
 *    `stored` since it was last erased.
 */

// Four spellings, three addresses: one is the upper-case spelling of another, one an IDN.
const SPELLINGS = ["ann@example.com", "ANN@Example.COM", "bo@example.org", "用户@例子.广告"];
const normal = (value: string) => value.trim().normalize("NFC").toLowerCase();
const ADDRESSES = [...new Set(SPELLINGS.map(normal))];
const DOMAINS = ["news.example.com", "shop.example.net"];
const MINUTE = 60;
const DAY = 86_400;

type Command =
	| {
			kind: "callback";
			event: "delivered" | "soft" | "hard" | "spamreport" | "unsubscribe";
			spelling: number;
			domain: number;
			ago: number;
			kvFails: boolean;
	  }
	| { kind: "repeat"; pick: number; kvFails: boolean }
	| {
			kind: "put";
			spelling: number;
			list: string;
			scope: number | null;
			expiresIn: number | null;
			kvFails: boolean;
	  }
	| {
			kind: "delete";
			spelling: number;
			list: string | null;
			scope: number | null;
			kvFails: boolean;
	  }
	| { kind: "erase"; spelling: number; suppressions: boolean }
	| { kind: "import" }
	| { kind: "advance"; seconds: number }
	| { kind: "cron" }
	| { kind: "settle"; seconds: number };

const spelling = fc.nat({ max: SPELLINGS.length - 1 });
const domainIndex = fc.nat({ max: DOMAINS.length - 1 });
const command: fc.Arbitrary<Command> = fc.oneof(
	{
		weight: 6,
		arbitrary: fc.record({
			kind: fc.constant("callback" as const),
			event: fc.constantFrom("delivered", "soft", "soft", "hard", "spamreport", "unsubscribe"),
			spelling,
			domain: domainIndex,
			// Within the soft-bounce window, some seconds apart, some sharing a second.
			ago: fc.oneof(fc.integer({ min: 0, max: 20 * DAY }), fc.constantFrom(0, 1, 60)),
			kvFails: fc.boolean(),
		}),
	},
	{
		weight: 2,
		arbitrary: fc.record({
			kind: fc.constant("repeat" as const),
			pick: fc.nat(),
			kvFails: fc.boolean(),
		}),
	},
	{
		weight: 2,
		arbitrary: fc.record({
			kind: fc.constant("put" as const),
			spelling,
			list: fc.constantFrom("manual", "bounce", "complaint", "unsubscribe"),
			scope: fc.option(domainIndex),
			expiresIn: fc.option(fc.integer({ min: MINUTE, max: 10 * DAY })),
			kvFails: fc.boolean(),
		}),
	},
	{
		weight: 2,
		arbitrary: fc.record({
			kind: fc.constant("delete" as const),
			spelling,
			list: fc.option(fc.constantFrom("manual", "bounce", "complaint", "unsubscribe")),
			scope: fc.option(domainIndex),
			kvFails: fc.boolean(),
		}),
	},
	{
		weight: 1,
		arbitrary: fc.record({
			kind: fc.constant("erase" as const),
			spelling,
			suppressions: fc.boolean(),
		}),
	},
	{ weight: 1, arbitrary: fc.constant({ kind: "import" as const }) },
	{
		weight: 2,
		arbitrary: fc.record({
			kind: fc.constant("advance" as const),
			seconds: fc.oneof(
				fc.integer({ min: MINUTE, max: 30 * MINUTE }),
				fc.integer({ min: MINUTE, max: 4 * DAY }),
			),
		}),
	},
	{ weight: 1, arbitrary: fc.constant({ kind: "cron" as const }) },
	{
		weight: 1,
		arbitrary: fc.record({
			kind: fc.constant("settle" as const),
			seconds: fc.integer({ min: KV_WRITE_SETTLE_SECONDS + MINUTE, max: 2 * DAY }),
		}),
	},
);

const nowSeconds = () => Math.floor(Date.now() / 1000);
const admin = { authorization: `Bearer ${tokens.admin}` };

/** What the run has done that the invariants need: no decision of the policy is modelled. */
type Trace = {
	bodies: Record<string, unknown>[];
	/** Events each address's callbacks reported stored since its last erasure. */
	stored: Map<string, number>;
	/** The origins (`event`, `soft`, `api`) that may have written each address's list and scope. */
	origins: Map<string, Set<string>>;
};

const originKey = (email: string, list: string, scope: string) => `${email}|${list}|${scope}`;
function touch(trace: Trace, email: string, list: string, scope: string, origin: string) {
	const key = originKey(email, list, scope);
	const set = trace.origins.get(key) ?? new Set<string>();
	set.add(origin);
	trace.origins.set(key, set);
}

function kvEnv(fails: boolean): Env | undefined {
	return fails ? countingKv({ put: true, delete: true }).env : undefined;
}

async function post(trace: Trace, body: Record<string, unknown>, fails: boolean) {
	const response = await postCallback(body, { env: kvEnv(fails) });
	expect(response.status).toBe(200);
	const answer = (await response.json()) as { stored: number; duplicates: number };
	const email = normal(String(body.email));
	trace.stored.set(email, (trace.stored.get(email) ?? 0) + answer.stored);
	const event = body.event;
	if (event === "bounce") {
		touch(trace, email, "bounce", "*", body.bounceType === "hard_bounce" ? "event" : "soft");
	} else if (event === "spamreport") {
		touch(trace, email, "complaint", "*", "event");
	} else if (event === "unsubscribe") {
		touch(trace, email, "unsubscribe", String(body.fromDomain), "event");
	}
}

async function exportCsv(): Promise<string> {
	const response = await getJson("/v1/suppressions/export?format=csv");
	expect(response.status).toBe(200);
	return response.text();
}

/** Invariant 3: importing the current export into the same database changes nothing. */
async function importExport(): Promise<void> {
	const csv = await exportCsv();
	const lines = csv.split(/\r?\n/).filter((line) => line !== "").length - 1;
	const response = await call("/v1/suppressions/import", {
		method: "POST",
		headers: { ...admin, "content-type": "text/csv" },
		body: csv,
	});
	expect(response.status).toBe(200);
	expect(await response.json(), csv).toEqual({ imported: 0, unchanged: lines, failed: [] });
}

async function run(trace: Trace, step: Command): Promise<void> {
	switch (step.kind) {
		case "callback": {
			const email = SPELLINGS[step.spelling] as string;
			const body: Record<string, unknown> = {
				event: step.event === "soft" || step.event === "hard" ? "bounce" : step.event,
				email,
				timestamp: nowSeconds() - step.ago,
				fromDomain: DOMAINS[step.domain],
				bulkId: "qcloudses-30-251200670-date-20220601142439-8jolHvR2XcXC1",
			};
			if (step.event === "soft") body.bounceType = "soft_bounce";
			if (step.event === "hard") body.bounceType = "hard_bounce";
			if (body.event === "bounce") body.reason = `${step.event} bounce`;
			trace.bodies.push(body);
			await post(trace, body, step.kvFails);
			return;
		}
		case "repeat": {
			const body = trace.bodies[step.pick % Math.max(trace.bodies.length, 1)];
			if (body) await post(trace, body, step.kvFails);
			return;
		}
		case "put": {
			const email = SPELLINGS[step.spelling] as string;
			const scope = step.scope === null ? "*" : (DOMAINS[step.scope] as string);
			const body: Record<string, unknown> = {
				list: step.list,
				scope,
				reason: "by the test",
				expiresAt: step.expiresIn === null ? null : nowSeconds() + step.expiresIn,
			};
			const response = await call(
				`/v1/suppressions/${encodeURIComponent(email)}`,
				{ method: "PUT", headers: admin, body: JSON.stringify(body) },
				kvEnv(step.kvFails),
			);
			expect(response.status, await response.clone().text()).toBe(200);
			touch(trace, normal(email), step.list, scope, "api");
			return;
		}
		case "delete": {
			const email = SPELLINGS[step.spelling] as string;
			const query = new URLSearchParams();
			if (step.list !== null) query.set("list", step.list);
			if (step.scope !== null) query.set("scope", DOMAINS[step.scope] as string);
			const response = await call(
				`/v1/suppressions/${encodeURIComponent(email)}?${query}`,
				{ method: "DELETE", headers: admin },
				kvEnv(step.kvFails),
			);
			expect(response.status, await response.clone().text()).toBe(200);
			return;
		}
		case "erase": {
			const email = SPELLINGS[step.spelling] as string;
			const response = await call(
				`/v1/addresses/${encodeURIComponent(email)}${step.suppressions ? "?suppressions=true" : ""}`,
				{ method: "DELETE", headers: admin },
			);
			expect(response.status, await response.clone().text()).toBe(200);
			trace.stored.set(normal(email), 0);
			if (step.suppressions) {
				for (const key of [...trace.origins.keys()]) {
					if (key.startsWith(`${normal(email)}|`)) trace.origins.delete(key);
				}
			}
			return;
		}
		case "import":
			await importExport();
			return;
		case "advance":
			vi.setSystemTime((nowSeconds() + step.seconds) * 1000);
			return;
		case "cron":
			await runCron();
			return;
		case "settle":
			vi.setSystemTime((nowSeconds() + step.seconds) * 1000);
			await runCron();
			await checkSettled();
			return;
	}
}

const QUERIES = ["", ...DOMAINS.map((domain) => `?fromDomain=${domain}`)];
const withConsistent = (query: string) =>
	query === "" ? "?consistent=true" : `${query}&consistent=true`;

async function check(
	emails: string[],
	fromDomain?: string,
): Promise<Array<{ normalized: string; suppressed: boolean; lists: string[] }>> {
	const response = await call("/v1/suppressions/check", {
		method: "POST",
		headers: { authorization: `Bearer ${tokens.lookup}` },
		body: JSON.stringify(fromDomain === undefined ? { emails } : { emails, fromDomain }),
	});
	expect(response.status).toBe(200);
	return ((await response.json()) as { results: never[] }).results;
}

const listsOf = (found: Lookup) => [...new Set(found.entries.map((entry) => entry.list))].sort();

/**
 * Invariants 1 and 2, right after a cron run later than every change by more than the KV settle
 * time: the edge copy answers what D1 answers, for every address and sender, lookup and check.
 */
async function checkSettled(): Promise<void> {
	for (const [q, query] of QUERIES.entries()) {
		const fromDomain = q === 0 ? undefined : DOMAINS[q - 1];
		const results = await check(SPELLINGS, fromDomain);
		for (const [i, spelled] of SPELLINGS.entries()) {
			const consistent = await lookup(spelled, withConsistent(query));
			const edge = await lookup(spelled, query);
			expect(edge, `edge lookup of ${spelled}${query}`).toEqual(consistent);
			const result = results[i];
			expect(
				{ suppressed: result?.suppressed, lists: [...(result?.lists ?? [])].sort() },
				`check of ${spelled}${query}`,
			).toEqual({ suppressed: consistent.suppressed, lists: listsOf(consistent) });
		}
	}
}

/** Invariants 3 to 6, on D1's view (consistent reads), at the end of a run. */
async function checkState(trace: Trace): Promise<void> {
	const now = nowSeconds();
	await importExport();
	for (const email of ADDRESSES) {
		const { entries } = await lookup(email, "?consistent=true");
		// 4: every live entry's times are in order and it has not expired.
		for (const entry of entries) {
			const created = Date.parse(entry.createdAt) / 1000;
			const updated = Date.parse(entry.updatedAt) / 1000;
			expect(created, JSON.stringify(entry)).toBeLessThanOrEqual(updated);
			expect(updated, JSON.stringify(entry)).toBeLessThanOrEqual(now);
			if (entry.expiresAt !== null) {
				expect(Date.parse(entry.expiresAt) / 1000, JSON.stringify(entry)).toBeGreaterThan(now);
			}
		}
		// 5: the last history line of a live entry's list and scope adds or renews it, where one
		// origin alone wrote that list and scope (two origins are two rows that share a list and
		// scope in the history: one may expire while the other lives).
		const response = await getJson(`/v1/suppressions/${encodeURIComponent(email)}/history`);
		expect(response.status).toBe(200);
		const { history } = (await response.json()) as {
			history: Array<{ action: string; list: string; scope: string }>;
		};
		for (const entry of entries as EntryJson[]) {
			if ((trace.origins.get(originKey(email, entry.list, entry.scope))?.size ?? 0) > 1) continue;
			const lines = history.filter(
				(line) => line.list === entry.list && line.scope === entry.scope,
			);
			expect(lines.at(-1)?.action, `${email} ${entry.list} ${entry.scope}`).toMatch(
				/^(added|renewed)$/,
			);
		}
		// 6: the events listed for an address are those its callbacks reported stored.
		const events = await getJson(`/v1/events?email=${encodeURIComponent(email)}&limit=1000`);
		const listed = ((await events.json()) as { events: Array<{ id: string }> }).events;
		expect(listed.length, email).toBe(trace.stored.get(email) ?? 0);
	}
	// 6: no event listed twice.
	const all = await getJson("/v1/events?limit=1000");
	const ids = ((await all.json()) as { events: Array<{ id: string }> }).events.map((e) => e.id);
	expect(new Set(ids).size).toBe(ids.length);
	expect(ids.length).toBe([...trace.stored.values()].reduce((a, b) => a + b, 0));
}

describe("stateful", () => {
	afterEach(() => {
		vi.useRealTimers();
	});

	// 150 sequences take about 8 s on an idle 2-core machine, twice that under load: its own time
	// limit, so that only a hang fails it.
	it("keeps the edge copy, the check, export/import, history and events consistent", async () => {
		const start = nowSeconds();
		await fc.assert(
			fc.asyncProperty(fc.array(command, { minLength: 1, maxLength: 14 }), async (commands) => {
				await resetDatabase();
				vi.useFakeTimers({ toFake: ["Date"] });
				vi.setSystemTime(start * 1000);
				try {
					const trace: Trace = { bodies: [], stored: new Map(), origins: new Map() };
					for (const step of commands) await run(trace, step);
					await run(trace, { kind: "settle", seconds: KV_WRITE_SETTLE_SECONDS + MINUTE });
					await checkState(trace);
				} finally {
					vi.useRealTimers();
				}
			}),
			{ numRuns: 150, seed: 20261123 },
		);
	}, 120_000);
});
