import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { expectedEntries } from "../../scripts/soak-policy.mjs";
import {
	call,
	countRows,
	daysAgo,
	entriesOf,
	getJson,
	postCallback,
	resetDatabase,
	tokens,
} from "../helpers";

type Json = Record<string, unknown>;

const localPart = fc.stringMatching(/^[a-z0-9][a-z0-9.+_'-]{0,20}$/);
const unicodeLocal = fc.constantFrom("用户", "josé", "ÄNNE", "o'brien", "first.last+tag");
const domain = fc.constantFrom(
	"example.com",
	"Mail.Example.COM",
	"例子.广告",
	"bücher.de",
	"sub.news.example.org",
);
const email = fc
	.tuple(fc.oneof(localPart, unicodeLocal), domain)
	.map(([local, host]) => `${local}@${host}`);
const text = fc.string({ unit: "grapheme", maxLength: 40 });
const seconds = fc.integer({ min: 0, max: 4_102_444_800 });

/** Any event Tencent could send: every documented field in every spelling, unknown fields too. */
const tencentEvent = fc
	.record(
		{
			event: fc.constantFrom(
				"delivered",
				"open",
				"click",
				"deferred",
				"dropped",
				"processed",
				"bounce",
				"spamreport",
				"unsubscribe",
			),
			email,
			timestamp: fc.oneof(seconds, seconds.map(String)),
			bulkId: fc.stringMatching(/^qcloudses-30-\d{9}-date-\d{14}-[A-Za-z0-9]{13}$/),
			reason: text,
			username: fc.stringMatching(/^\d{6,10}$/),
			fromDomain: domain,
			templateId: fc.nat({ max: 10_000_000 }),
			link: fc.webUrl(),
			useragent: text,
			subject: text,
			messageId: fc.uuid(),
			sentTimestamp: seconds,
			taskId: fc.nat({ max: 1_000_000 }),
			"X-Tencentcloudses-Cb-Order": text,
			futureField: fc.jsonValue({ maxDepth: 3 }),
		},
		{ requiredKeys: ["event", "email", "timestamp"] },
	)
	.chain((event) =>
		fc
			.constantFrom("hard_bounce", "soft_bounce", "hard", "soft", "")
			.map((bounceType) =>
				event.event === "bounce" ? { ...event, bounceType } : { ...event, bounceType: "" },
			),
	);

const iso = (value: number | string) =>
	new Date(Number(value) * 1000).toISOString().replace(".000", "");
const normal = (value: string) => value.trim().toLowerCase().normalize("NFC");

async function onlyEvent(address: string): Promise<Json> {
	const response = await getJson(`/v1/events?email=${encodeURIComponent(address)}`);
	const { events } = (await response.json()) as { events: Json[] };
	expect(events).toHaveLength(1);
	return events[0] as Json;
}

describe("properties", () => {
	it("any well-formed event is accepted and reads back unchanged", async () => {
		await fc.assert(
			fc.asyncProperty(tencentEvent, async (event) => {
				await resetDatabase();
				const response = await postCallback(event);
				expect(response.status).toBe(200);
				const stored = await onlyEvent(normal(event.email));
				expect(stored.event).toBe(event.event);
				expect(stored.occurredAt).toBe(iso(event.timestamp));
				expect(stored.bulkId).toBe(event.bulkId ?? null);
				expect(stored.reason).toBe(event.reason?.trim() || null);
				expect(stored.templateId).toBe(event.templateId ?? null);
				expect(stored.taskId).toBe(event.taskId ?? null);
				expect(stored.messageId).toBe(event.messageId ?? null);
				expect(stored.link).toBe(event.link ?? null);
				expect(stored.fromDomain).toBe(event.fromDomain ? normal(event.fromDomain) : null);
				expect(stored.sentAt).toBe(
					event.sentTimestamp === undefined ? null : iso(event.sentTimestamp),
				);
				expect(stored.custom).toEqual(
					event["X-Tencentcloudses-Cb-Order"] === undefined
						? {}
						: { "X-Tencentcloudses-Cb-Order": event["X-Tencentcloudses-Cb-Order"] },
				);
				// What was sent is JSON: compare with the value as JSON carries it (-0 travels as 0).
				const sent = JSON.parse(JSON.stringify(event)) as Json;
				expect(stored.extra).toEqual(
					"futureField" in sent ? { futureField: sent.futureField } : {},
				);
			}),
			{ numRuns: 60 },
		);
	});

	const mutations: Array<[string, (event: Json) => Json]> = [
		["drop event", ({ event, ...rest }) => rest],
		["drop email", ({ email, ...rest }) => rest],
		["drop timestamp", ({ timestamp, ...rest }) => rest],
		["unknown event type", (event) => ({ ...event, event: "exploded" })],
		["address without @", (event) => ({ ...event, email: String(event.email).replace("@", "") })],
		["negative timestamp", (event) => ({ ...event, timestamp: -1 })],
		["fractional timestamp", (event) => ({ ...event, timestamp: 1.5 })],
		["timestamp in milliseconds", (event) => ({ ...event, timestamp: 1_767_225_600_000 })],
		["number as reason", (event) => ({ ...event, reason: 42 })],
		["object as bulkId", (event) => ({ ...event, bulkId: {} })],
		["bad bounceType", (event) => ({ ...event, bounceType: "medium" })],
		["eventid of another type", (event) => ({ ...event, eventid: event.event === "open" ? 5 : 4 })],
		["templateId as text", (event) => ({ ...event, templateId: "abc" })],
		["custom header as number", (event) => ({ ...event, "X-Tencentcloudses-Cb-Order": 7 })],
		["reason too long", (event) => ({ ...event, reason: "x".repeat(4097) })],
	];

	it("any single mutation that breaks the schema is refused and stores nothing", async () => {
		await fc.assert(
			fc.asyncProperty(
				tencentEvent,
				fc.constantFrom(...mutations),
				async (event, [name, mutate]) => {
					await resetDatabase();
					const response = await postCallback(mutate(event as Json));
					expect(response.status, name).toBe(400);
					expect(await countRows("events")).toBe(0);
				},
			),
			{ numRuns: 60 },
		);
	});

	it("the policy gives the same entries for any arrival order and any duplicates", async () => {
		const base = daysAgo(10);
		const address = fc.constantFrom("a@example.com", "b@example.com");
		const policyEvent = fc.record({
			event: fc.constantFrom("bounce", "bounce", "delivered", "spamreport", "unsubscribe", "open"),
			bounceType: fc.constantFrom("hard_bounce", "soft_bounce", "soft_bounce"),
			email: address,
			timestamp: fc.integer({ min: base, max: base + 9 * 86_400 }),
			fromDomain: fc.constantFrom("news.example.com", "shop.example.com"),
			reason: fc.constantFrom("550 no such user", "452 mailbox full", "421 try later"),
		});
		await fc.assert(
			fc.asyncProperty(
				fc.uniqueArray(policyEvent, {
					minLength: 1,
					maxLength: 14,
					selector: (event) => JSON.stringify(event),
				}),
				fc.infiniteStream(fc.nat()),
				async (events, randomness) => {
					const orders = [0, 1].map(() => {
						const copy = [...events, ...events.filter(() => randomness.next().value % 4 === 0)];
						for (let i = copy.length - 1; i > 0; i--) {
							const j = randomness.next().value % (i + 1);
							[copy[i], copy[j]] = [
								copy[j] as (typeof copy)[number],
								copy[i] as (typeof copy)[number],
							];
						}
						return copy;
					});
					const outcomes: unknown[] = [];
					for (const order of orders) {
						await resetDatabase();
						for (const event of order) expect((await postCallback(event)).status).toBe(200);
						outcomes.push([await entriesOf("a@example.com"), await entriesOf("b@example.com")]);
					}
					expect(outcomes[1]).toEqual(outcomes[0]);
				},
			),
			{ numRuns: 15 },
		);
	});

	it("the entries equal those of an independent model of the policy, removals included", async () => {
		// Whole days before a fixed moment (some runs have expired, some still suppress) and a
		// second or not, so that runs meet the window's edges and events share a second. The moment
		// is ten minutes ago, so that no entry expires while a case runs.
		const base = daysAgo(0) - 600;
		const policyEvent = fc.record({
			event: fc.constantFrom(
				"bounce",
				"bounce",
				"bounce",
				"delivered",
				"open",
				"spamreport",
				"unsubscribe",
			),
			bounceType: fc.constantFrom("hard_bounce", "soft_bounce", "soft_bounce", "soft_bounce", ""),
			email: fc.constant("m@example.com"),
			timestamp: fc
				.tuple(fc.constantFrom(0, 1, 13, 14, 15, 28), fc.integer({ min: 0, max: 1 }))
				.map(([days, second]) => base - days * 86_400 + second),
			reason: fc.constantFrom("452 mailbox full", "421 try later"),
			fromDomain: fc.constantFrom("news.example.com", "News.Example.com", "shop.example.com"),
		});
		await fc.assert(
			fc.asyncProperty(
				fc.uniqueArray(policyEvent, {
					minLength: 1,
					maxLength: 30,
					selector: (event) => JSON.stringify(event),
				}),
				fc.integer({ min: 1, max: 8 }),
				// Late deliveries, each in the second of a bounce sent before it: they can break a
				// run whose entry already stands, in its last second too.
				fc.array(fc.nat(), { maxLength: 3 }),
				// An operator's removals after the first `split` events: nothing sent, all of it
				// older than the removal, may bring a removed list and scope back.
				fc.subarray(["bounce *", "complaint *", "unsubscribe news.example.com"]),
				fc.nat(),
				async (sent, batch, late, removals, split) => {
					const bounces = sent.filter((event) => event.event === "bounce");
					const events = [
						...sent,
						...late.flatMap((pick) => {
							const bounce = bounces[pick % Math.max(bounces.length, 1)];
							return bounce
								? [{ event: "delivered", email: "m@example.com", timestamp: bounce.timestamp }]
								: [];
						}),
					];
					await resetDatabase();
					const first = removals.length > 0 ? split % (events.length + 1) : events.length;
					const phases = [events.slice(0, first), events.slice(first)];
					for (const [phase, posted] of phases.entries()) {
						for (let i = 0; i < posted.length; i += batch) {
							expect((await postCallback(posted.slice(i, i + batch))).status).toBe(200);
						}
						if (phase > 0) continue;
						for (const removal of removals) {
							const [list, scope] = removal.split(" ") as [string, string];
							const query = `list=${list}&scope=${encodeURIComponent(scope)}`;
							const response = await call(`/v1/suppressions/m%40example.com?${query}`, {
								method: "DELETE",
								headers: { authorization: `Bearer ${tokens.admin}` },
							});
							expect(response.status).toBe(200);
						}
					}
					const entries = await entriesOf("m@example.com");
					const decided = entries.map(({ list, scope, eventCount, lastEventAt, expiresAt }) =>
						JSON.stringify({ list, scope, eventCount, lastEventAt, expiresAt }),
					);
					const model = expectedEntries(events, Math.floor(Date.now() / 1000))
						.filter((entry) => !removals.includes(`${entry.list} ${entry.scope}`))
						.map((entry) => JSON.stringify(entry));
					expect(decided.sort()).toEqual(model.sort());
				},
			),
			{ numRuns: 200 },
		);
	});
});
