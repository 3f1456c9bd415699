import { env } from "cloudflare:workers";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { daysAgo, entriesOf, getJson, lookup, postCallback, resetDatabase } from "../helpers";

/**
 * A callback may carry many events, and the store takes up to five as bound parameters and more
 * as one JSON parameter; the policy decides them in one transaction. README: decisions use event
 * times, never arrival order, and a redelivered event never counts twice. So the same events,
 * sent as one array, as several arrays or one by one, must leave the same events, the same
 * entries (every field but the two wall-clock times) and the same lookups, from D1 and from KV.
 * History is not compared: it records each change, and one array makes one change where the same
 * events one by one make several.
 */

const ADDRESSES = ["a@example.com", "b@example.com", "c@example.org"];
const SENDERS = ["news.example.com", "shop.example.com"];
// Whole days before a moment ten minutes ago, and a second or two: runs meet the window's and the
// expiries' edges, events share a second, and no expiry falls while a case runs.
const BASE = daysAgo(0) - 600;

const callbackEvent = fc.record({
	event: fc.constantFrom(
		"bounce",
		"bounce",
		"bounce",
		"delivered",
		"delivered",
		"spamreport",
		"spamreport",
		"unsubscribe",
		"unsubscribe",
		"open",
		"click",
	),
	bounceType: fc.constantFrom("hard_bounce", "soft_bounce", "soft_bounce", "soft", ""),
	email: fc.constantFrom(...ADDRESSES, "a@example.com", "A@Example.com "),
	timestamp: fc
		.tuple(fc.constantFrom(0, 1, 2, 13, 14, 15, 28), fc.integer({ min: 0, max: 2 }))
		.map(([days, second]) => BASE - days * 86_400 + second),
	reason: fc.constantFrom("452 mailbox full", "421 try later", "550 no such user"),
	bulkId: fc.constantFrom("bulk-1", "bulk-2"),
	fromDomain: fc.constantFrom(...SENDERS, "News.Example.com", ""),
	from: fc.constantFrom("x@shop.example.com", "News <n@news.example.com>", ""),
	// Every column, so that the two insert paths are compared field by field.
	messageId: fc.constantFrom("<m1@example.com>", ""),
	templateId: fc.constantFrom(7, "12", ""),
	taskId: fc.constantFrom(0, 9_007_199_254_740_991),
	username: fc.constantFrom("1300000001", 251_200_670),
	link: fc.constantFrom("https://example.com/l", ""),
	useragent: fc.constantFrom("agent/1.0", " "),
	subject: fc.constantFrom("=?UTF-8?B?5L2g5aW9?=", "plain\u0000nul"),
	sentTimestamp: fc.constantFrom(1_767_225_500, "1767225500", ""),
	"X-Tencentcloudses-Cb-Order": fc.constantFrom("o-1", "o-2"),
	futureField: fc.constantFrom(1, 0.5, { nested: [null, "x"] }),
});

const settings = fc.record({
	HARD_BOUNCE_SUPPRESS_DAYS: fc.constantFrom("0", "1", "10"),
	SOFT_BOUNCE_LIMIT: fc.constantFrom("1", "2", "3"),
	SOFT_BOUNCE_WINDOW_DAYS: fc.constantFrom("1", "14"),
	SOFT_BOUNCE_SUPPRESS_DAYS: fc.constantFrom("2", "14", "30"),
	UNSUBSCRIBE_SCOPE: fc.constantFrom("domain", "global"),
});

type Sent = Record<string, unknown>;

/** `events` cut into requests of the given sizes in turn (2 to 8: both insert paths). */
function requests(events: Sent[], sizes: number[]): Sent[][] {
	const out: Sent[][] = [];
	for (let i = 0, k = 0; i < events.length; k++) {
		const size = sizes[k % sizes.length] as number;
		out.push(events.slice(i, i + size));
		i += size;
	}
	return out;
}

const sorted = <T>(items: T[]) =>
	items.sort((a, b) => JSON.stringify(a).localeCompare(JSON.stringify(b)));

/** What the store holds after posting `bodies`: events, entries and lookups of every address. */
async function outcome(bodies: Array<Sent | Sent[]>, testEnv: Env): Promise<unknown[]> {
	await resetDatabase();
	let stored = 0;
	for (const body of bodies) {
		const response = await postCallback(body, { env: testEnv });
		expect(response.status).toBe(200);
		stored += ((await response.json()) as { stored: number }).stored;
	}
	const state: unknown[] = [stored];
	for (const address of ADDRESSES) {
		const page = await getJson(`/v1/events?email=${encodeURIComponent(address)}&limit=1000`);
		const { events } = (await page.json()) as { events: Sent[] };
		state.push(sorted(events.map(({ receivedAt, ...rest }) => rest)));
		state.push(await entriesOf(address));
		for (const query of ["", ...SENDERS.map((sender) => `?fromDomain=${sender}`)]) {
			const edge = await lookup(address, query, testEnv);
			const entries = edge.entries.map(({ createdAt, updatedAt, ...rest }) => rest);
			state.push(query, edge.suppressed, sorted(entries));
		}
	}
	return state;
}

describe("many events in one callback", () => {
	it("one array, several arrays or one by one leave the same events, entries and lookups", async () => {
		await fc.assert(
			fc.asyncProperty(
				fc.array(callbackEvent, { minLength: 1, maxLength: 30 }),
				fc.array(fc.nat(), { maxLength: 8 }),
				fc.array(fc.integer({ min: 2, max: 8 }), { minLength: 1, maxLength: 6 }),
				settings,
				async (unique, repeats, sizes, vars) => {
					// Exact repeats, of events stored earlier or in the same request, anywhere.
					const events: Sent[] = [...unique];
					for (const pick of repeats) {
						events.splice(pick % (events.length + 1), 0, unique[pick % unique.length] as Sent);
					}
					const testEnv = { ...env, ...vars } as Env;
					const oneArray = await outcome([events], testEnv);
					expect(await outcome(requests(events, sizes), testEnv)).toEqual(oneArray);
					expect(await outcome(events, testEnv)).toEqual(oneArray);
				},
			),
			{ numRuns: 60, seed: 20_261_123 },
		);
	}, 60_000);
});
