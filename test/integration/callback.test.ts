import { env } from "cloudflare:workers";
import { beforeEach, describe, expect, it } from "vitest";
import {
	call,
	countRows,
	docSampleLines,
	docSamples,
	envWithFailingBatch,
	getJson,
	lookup,
	postCallback,
	resetDatabase,
	tokens,
} from "../helpers";

type Json = Record<string, unknown>;

async function eventsOf(email: string): Promise<Json[]> {
	const response = await getJson(`/v1/events?email=${encodeURIComponent(email)}&limit=1000`);
	expect(response.status).toBe(200);
	const body = (await response.json()) as { events: Json[] };
	return body.events;
}

async function onlyEvent(email = "example@example.com"): Promise<Json> {
	const events = await eventsOf(email);
	expect(events).toHaveLength(1);
	return events[0] as Json;
}

const base = {
	event: "delivered",
	email: "someone@example.com",
	bulkId: "qcloudses-30-251200670-date-20260101000000-abc",
	timestamp: 1767225600,
};

beforeEach(resetDatabase);

describe("Tencent's published samples", () => {
	it.each(docSampleLines.map((line, index) => [index, line]))(
		"sample %i is stored and reads back field by field",
		async (index, line) => {
			const sample = docSamples[index] as Json;
			const response = await postCallback(line);
			expect(response.status).toBe(200);
			expect(response.headers.get("content-type")).toBe("application/json; charset=utf-8");
			expect(await response.json()).toEqual({ ok: true, received: 1, stored: 1, duplicates: 0 });

			const event = await onlyEvent();
			expect(event.id).toMatch(/^[0-9a-f]{32}$/);
			expect(event.event).toBe(sample.event);
			expect(event.email).toBe("example@example.com");
			expect(event.bulkId).toBe(sample.bulkId);
			expect(event.occurredAt).toBe(
				new Date((sample.timestamp as number) * 1000).toISOString().replace(".000", ""),
			);
			expect(event.reason).toBe(sample.reason);
			expect(event.bounceType).toBe(sample.bounceType === "hard_bounce" ? "hard" : null);
			expect(event.appId).toBe(sample.username ?? null);
			expect(event.from).toBe(sample.from ?? null);
			expect(event.fromDomain).toBe(sample.fromDomain ?? null);
			expect(event.templateId).toBe(sample.templateId ?? null);
			expect(event.subject).toBe(sample.subject ?? null);
			expect(event.messageId).toBe(sample.messageId ?? null);
			expect(event.sentAt).toBe(
				sample.sentTimestamp
					? new Date((sample.sentTimestamp as number) * 1000).toISOString().replace(".000", "")
					: null,
			);
			expect(event.custom).toEqual(
				sample["X-Tencentcloudses-Cb-Custom"]
					? { "X-Tencentcloudses-Cb-Custom": "ses callback" }
					: {},
			);
			expect(event.extra).toEqual({});
			expect(event.receivedAt).toMatch(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$/);
		},
	);

	it("the 2025 sample reads back exactly as the contract shows it", async () => {
		await postCallback(docSampleLines[5]);
		const { receivedAt, id, ...event } = await onlyEvent();
		expect(event).toEqual({
			event: "bounce",
			email: "example@example.com",
			bulkId: "qcloudses-30-251200670-date-20220601142439-8jolHvR2XcXC1",
			messageId: "ea2783c1-7704-48a8-af36-2b9e83e767ec@fromexample.com",
			taskId: null,
			templateId: 123456,
			appId: "251200670",
			from: "test@fromexample.com",
			fromDomain: "fromexample.com",
			bounceType: "hard",
			reason: "551 5.1.1 recipient is not exist",
			link: null,
			userAgent: null,
			subject: "example subject",
			occurredAt: "2022-06-01T06:24:43Z",
			sentAt: "2025-10-27T08:58:07Z",
			custom: { "X-Tencentcloudses-Cb-Custom": "ses callback" },
			extra: {},
		});
	});

	it("all samples in one array are stored in one request", async () => {
		const response = await postCallback(docSamples);
		expect(await response.json()).toEqual({ ok: true, received: 6, stored: 6, duplicates: 0 });
		expect(await eventsOf("example@example.com")).toHaveLength(6);
	});

	it("an array of more than five events stores the same fields as events sent one by one", async () => {
		// Up to five events are bound as parameters; more travel as one JSON parameter.
		const withoutArrival = (events: Json[]) =>
			events
				.map(({ receivedAt, ...rest }) => rest)
				.sort((a, b) => (String(a.id) < String(b.id) ? -1 : 1));
		for (const sample of docSamples) await postCallback(sample);
		const oneByOne = withoutArrival(await eventsOf("example@example.com"));
		await resetDatabase();
		await postCallback(docSamples);
		expect(withoutArrival(await eventsOf("example@example.com"))).toEqual(oneByOne);
		expect(oneByOne).toHaveLength(docSamples.length);
	});
});

describe("the events table", () => {
	it("keeps each field in its documented column, custom and extra NULL when empty", async () => {
		const full = (i: number) => ({
			event: "bounce",
			bounceType: "soft_bounce",
			email: `columns${i}@example.com`,
			bulkId: "bulk-1",
			messageId: "<m1@example.com>",
			taskId: 11,
			templateId: 22,
			username: "1300000001",
			from: "news@mail.example.com",
			reason: "452 full",
			link: "https://example.com/l",
			useragent: "agent/1.0",
			subject: "Hello",
			timestamp: 1_767_225_600,
			sentTimestamp: 1_767_225_500,
			"X-Tencentcloudses-Cb-Order": "o-1",
			unknownField: 7,
		});
		const bare = (i: number) => ({
			event: "delivered",
			email: `bare${i}@example.com`,
			timestamp: 1_767_225_700,
		});
		// One request of each path: up to five events as bound parameters, more as one JSON value.
		expect((await postCallback([full(0), bare(0)])).status).toBe(200);
		expect((await postCallback([1, 2, 3].flatMap((i) => [full(i), bare(i)]))).status).toBe(200);
		const { results } = await env.DB.prepare(
			`SELECT email, event, bulk_id, message_id, task_id, template_id, app_id, from_address,
				from_domain, bounce_type, reason, link, user_agent, subject, occurred_at, sent_at,
				received_at IS NOT NULL AS received, custom, extra
			FROM events ORDER BY email`,
		).all();
		const row = (email: string) => ({
			email,
			event: "bounce",
			bulk_id: "bulk-1",
			message_id: "<m1@example.com>",
			task_id: 11,
			template_id: 22,
			app_id: "1300000001",
			from_address: "news@mail.example.com",
			from_domain: "mail.example.com",
			bounce_type: "soft",
			reason: "452 full",
			link: "https://example.com/l",
			user_agent: "agent/1.0",
			subject: "Hello",
			occurred_at: 1_767_225_600,
			sent_at: 1_767_225_500,
			received: 1,
			custom: '{"X-Tencentcloudses-Cb-Order":"o-1"}',
			extra: '{"unknownField":7}',
		});
		const empty = (email: string) => ({
			email,
			event: "delivered",
			bulk_id: null,
			message_id: null,
			task_id: null,
			template_id: null,
			app_id: null,
			from_address: null,
			from_domain: null,
			bounce_type: null,
			reason: null,
			link: null,
			user_agent: null,
			subject: null,
			occurred_at: 1_767_225_700,
			sent_at: null,
			received: 1,
			custom: null,
			extra: null,
		});
		expect(results).toEqual([
			...[0, 1, 2, 3].map((i) => empty(`bare${i}@example.com`)),
			...[0, 1, 2, 3].map((i) => row(`columns${i}@example.com`)),
		]);
	});
});

describe("exactly once", () => {
	it("a repeated delivery is stored once", async () => {
		expect(await (await postCallback(base)).json()).toMatchObject({ stored: 1, duplicates: 0 });
		const again = await postCallback(base);
		expect(again.status).toBe(200);
		expect(await again.json()).toEqual({ ok: true, received: 1, stored: 0, duplicates: 1 });
		expect(await countRows("events")).toBe(1);
	});

	it("a repeat inside one array is stored once", async () => {
		const response = await postCallback([base, base, { ...base, event: "open" }]);
		expect(await response.json()).toEqual({ ok: true, received: 3, stored: 2, duplicates: 1 });
		expect(await countRows("events")).toBe(2);
	});

	it("repeats far apart in a long array are stored once", async () => {
		// More than five events go in one INSERT statement as one JSON parameter: these repeats meet
		// their first copy inside the same statement.
		const distinct = Array.from({ length: 12 }, (_, i) => ({
			...base,
			timestamp: base.timestamp + i,
		}));
		const response = await postCallback([...distinct, distinct[0], distinct[6], distinct[11]]);
		expect(await response.json()).toEqual({ ok: true, received: 15, stored: 12, duplicates: 3 });
		expect(await countRows("events")).toBe(12);
		const stored = await eventsOf(base.email);
		expect(stored.map((event) => event.occurredAt)).toEqual(
			distinct
				.map((event) => new Date(event.timestamp * 1000).toISOString().replace(".000", ""))
				.reverse(),
		);
	});

	it("the same event with its keys in another order is the same event", async () => {
		await postCallback(base);
		const reordered = Object.fromEntries(Object.entries(base).reverse());
		expect(await (await postCallback(reordered)).json()).toMatchObject({
			stored: 0,
			duplicates: 1,
		});
	});

	it("events that differ in any field are distinct", async () => {
		const response = await postCallback([base, { ...base, timestamp: base.timestamp + 1 }]);
		expect(await response.json()).toMatchObject({ stored: 2, duplicates: 0 });
	});
});

describe("old spellings and values", () => {
	it("accepts bulkid, string timestamps and the older bounce types", async () => {
		const { bulkId, ...rest } = base;
		const response = await postCallback([
			{
				...rest,
				bulkid: "qcloud-ses-OLD",
				event: "bounce",
				bounceType: "hard",
				timestamp: "1767225600",
			},
			{
				...rest,
				bulkid: "qcloud-ses-OLD",
				event: "bounce",
				bounceType: "soft",
				timestamp: 1767225601,
			},
			{ ...rest, event: "processed", timestamp: 1767225602 },
		]);
		expect(await response.json()).toMatchObject({ stored: 3 });
		const events = await eventsOf(base.email);
		expect(
			events.map((event) => [event.event, event.bounceType, event.bulkId, event.occurredAt]),
		).toEqual([
			["processed", null, null, "2026-01-01T00:00:02Z"],
			["bounce", "soft", "qcloud-ses-OLD", "2026-01-01T00:00:01Z"],
			["bounce", "hard", "qcloud-ses-OLD", "2026-01-01T00:00:00Z"],
		]);
	});

	it("maps soft_bounce, keeps taskId, eventid and link fields", async () => {
		await postCallback({
			...base,
			event: "click",
			eventid: 5,
			taskId: "42",
			link: "https://example.com/a?b=c",
			useragent: "Mozilla/5.0",
			templateId: "7",
		});
		const event = await onlyEvent(base.email);
		expect(event).toMatchObject({
			event: "click",
			taskId: 42,
			templateId: 7,
			link: "https://example.com/a?b=c",
			userAgent: "Mozilla/5.0",
		});
		expect(event.extra).toEqual({});
	});

	it("reads blank number fields and a blank bulk id spelling as absent", async () => {
		const response = await postCallback([
			{ ...base, bulkid: "", templateId: "", taskId: " ", sentTimestamp: "", eventid: "" },
			{ ...base, event: "open", bulkId: "", bulkid: "qcloud-ses-OLD" },
		]);
		expect(await response.json()).toMatchObject({ stored: 2 });
		const events = await eventsOf(base.email);
		expect(
			events.map((event) => [
				event.event,
				event.bulkId,
				event.templateId,
				event.taskId,
				event.sentAt,
			]),
		).toEqual([
			["open", "qcloud-ses-OLD", null, null, null],
			["delivered", base.bulkId, null, null, null],
		]);
	});

	it("reads a blank bulk id with spaces as absent, and one with spaces as the same id", async () => {
		const response = await postCallback([
			{ ...base, bulkId: "  ", bulkid: "qcloud-ses-OLD" },
			{ ...base, event: "open", bulkId: " qcloud-ses-OLD ", bulkid: "qcloud-ses-OLD" },
		]);
		expect(response.status).toBe(200);
		expect(await response.json()).toMatchObject({ stored: 2 });
		const events = await eventsOf(base.email);
		expect(events.map((event) => [event.event, event.bulkId])).toEqual([
			["open", "qcloud-ses-OLD"],
			["delivered", "qcloud-ses-OLD"],
		]);
	});

	it("reads a blank username as no appId and trims the spaces around one", async () => {
		const response = await postCallback([
			{ ...base, username: "" },
			{ ...base, event: "open", username: "  " },
			{ ...base, event: "click", username: " 1300000001 " },
		]);
		expect(await response.json()).toMatchObject({ stored: 3 });
		const events = await eventsOf(base.email);
		expect(events.map((event) => [event.event, event.appId])).toEqual([
			["click", "1300000001"],
			["open", null],
			["delivered", null],
		]);
	});

	it("accepts a body that starts with a UTF-8 byte order mark", async () => {
		const bytes = new TextEncoder().encode(`\uFEFF${JSON.stringify(base)}`);
		expect(Array.from(bytes.subarray(0, 3))).toEqual([0xef, 0xbb, 0xbf]);
		const response = await postCallback(bytes);
		expect(response.status).toBe(200);
		expect(await response.json()).toMatchObject({ stored: 1 });
		expect(await onlyEvent(base.email)).toMatchObject({ event: "delivered", email: base.email });
	});

	it("reads blank text fields as absent and trims the spaces around the others", async () => {
		const fields = ["reason", "link", "useragent", "messageId", "subject", "from", "fromDomain"];
		const blank = (value: string) => Object.fromEntries(fields.map((field) => [field, value]));
		const response = await postCallback([
			{ ...base, ...blank("") },
			{ ...base, event: "open", ...blank("  ") },
			{
				...base,
				event: "click",
				reason: " 550 no such user ",
				link: " https://example.com/a ",
				useragent: " Mozilla/5.0 ",
				messageId: " m-1@example.com ",
				subject: " Hello ",
				from: " news@example.com ",
				fromDomain: " example.com ",
			},
		]);
		expect(await response.json()).toMatchObject({ stored: 3 });
		const read = ["reason", "link", "userAgent", "messageId", "subject", "from", "fromDomain"];
		const events = await eventsOf(base.email);
		expect(events.map((event) => [event.event, ...read.map((field) => event[field])])).toEqual([
			[
				"click",
				"550 no such user",
				"https://example.com/a",
				"Mozilla/5.0",
				"m-1@example.com",
				"Hello",
				"news@example.com",
				"example.com",
			],
			["open", null, null, null, null, null, null, null],
			["delivered", null, null, null, null, null, null, null],
		]);
	});

	it("takes every modeled field at its longest or largest, and stores it whole", async () => {
		const longest = {
			event: "bounce",
			// Trimmed to a plausible address once its 1024 characters are read.
			email: `someone@example.com${" ".repeat(1024 - 19)}`,
			timestamp: 253402300799,
			sentTimestamp: 253402300799,
			bulkId: "b".repeat(512),
			bulkid: "b".repeat(512),
			reason: "r".repeat(4096),
			username: "u".repeat(64),
			from: `${"f".repeat(320 - 12)}@example.com`,
			fromDomain: `${"d".repeat(63)}.${"d".repeat(63)}.${"d".repeat(63)}.${"d".repeat(61)}`,
			link: "l".repeat(8192),
			useragent: "a".repeat(2048),
			subject: "s".repeat(4096),
			messageId: "m".repeat(998),
		};
		expect(longest.email).toHaveLength(1024);
		expect(longest.from).toHaveLength(320);
		expect(longest.fromDomain).toHaveLength(253);
		const response = await postCallback(longest);
		expect(response.status).toBe(200);
		expect(await onlyEvent(base.email)).toMatchObject({
			occurredAt: "9999-12-31T23:59:59Z",
			sentAt: "9999-12-31T23:59:59Z",
			bulkId: longest.bulkId,
			reason: longest.reason,
			appId: longest.username,
			from: longest.from,
			fromDomain: longest.fromDomain,
			link: longest.link,
			userAgent: longest.useragent,
			subject: longest.subject,
			messageId: longest.messageId,
		});
	});

	it("reads ids written as up to 16 digits, and refuses 17", async () => {
		const response = await postCallback({
			...base,
			templateId: "9007199254740991",
			taskId: "0000000000000042",
		});
		expect(response.status).toBe(200);
		expect(await onlyEvent(base.email)).toMatchObject({
			templateId: 9007199254740991,
			taskId: 42,
		});
		const refused = await postCallback({ ...base, taskId: "00000000000000042" });
		expect(refused.status).toBe(400);
		const body = (await refused.json()) as { error: { issues: Json[] } };
		expect(body.error.issues.map((issue) => issue.path)).toEqual(["taskId"]);
	});

	it("keeps a custom header of 4096 characters", async () => {
		const value = "v".repeat(4096);
		const response = await postCallback({ ...base, "X-Tencentcloudses-Cb-Big": value });
		expect(response.status).toBe(200);
		expect((await onlyEvent(base.email)).custom).toEqual({ "X-Tencentcloudses-Cb-Big": value });
	});

	it("still refuses two different bulk ids, and a non-numeric template id", async () => {
		for (const [field, value] of [
			["bulkid", "other"],
			["templateId", "seven"],
		]) {
			const response = await postCallback({ ...base, [field as string]: value });
			expect(response.status).toBe(400);
			const body = (await response.json()) as { error: { issues: Json[] } };
			expect(body.error.issues.map((issue) => issue.path)).toEqual([field]);
		}
		expect(await countRows("events")).toBe(0);
	});

	it("stores a folded subject unfolded and decoded, ISO-2022-JP words included", async () => {
		await postCallback({
			...base,
			subject:
				"Re:\r\n =?ISO-2022-JP?B?GyRCJUYbKEI=?=\r\n =?ISO-2022-JP?B?GyRCJTklSBsoQg==?=\r\n 2026",
		});
		expect((await onlyEvent(base.email)).subject).toBe("Re: テスト 2026");
	});

	it("derives fromDomain from from when it is missing", async () => {
		await postCallback({ ...base, from: "News@Mail.Example.com" });
		expect(await onlyEvent(base.email)).toMatchObject({
			from: "news@mail.example.com",
			fromDomain: "mail.example.com",
		});
	});

	it.each([
		["Example News <News@Example.com>", "Example News <news@example.com>", "example.com"],
		["<news@example.com>", "<news@example.com>", "example.com"],
		["News@Example.com, Other@Example.org", "news@example.com, other@example.org", null],
		["Not An Address", "not an address", null],
	])(
		"takes fromDomain only from a plausible address in from (%s)",
		async (from, stored, domain) => {
			await postCallback({ ...base, from });
			expect(await onlyEvent(base.email)).toMatchObject({ from: stored, fromDomain: domain });
		},
	);

	it("keeps the display name in from as received, an encoded one too", async () => {
		await postCallback({ ...base, from: " =?UTF-8?B?5rWL6K+V?= <News@Example.com> " });
		expect(await onlyEvent(base.email)).toMatchObject({
			from: "=?UTF-8?B?5rWL6K+V?= <news@example.com>",
			fromDomain: "example.com",
		});
	});

	it("an unsubscribe whose from has a display name is scoped to the sender's domain", async () => {
		await postCallback({
			...base,
			event: "unsubscribe",
			email: "reader@example.org",
			from: "Example News <news@example.com>",
		});
		const scoped = await lookup("reader@example.org", "?fromDomain=example.com&consistent=true");
		expect(scoped.entries.map((entry) => entry.scope)).toEqual(["example.com"]);
		expect(scoped.suppressed).toBe(true);
	});

	it("refuses an eventid that disagrees with event", async () => {
		const response = await postCallback({ ...base, event: "delivered", eventid: 3 });
		expect(response.status).toBe(400);
		const body = (await response.json()) as { error: { code: string; issues: Json[] } };
		expect(body.error.code).toBe("invalid_event");
		expect(body.error.issues).toEqual([
			{ path: "eventid", message: "is 3 (bounce) but event is delivered" },
		]);
		expect(await countRows("events")).toBe(0);
	});

	it("refuses an eventid Tencent does not define", async () => {
		const response = await postCallback({ ...base, eventid: 9 });
		expect(response.status).toBe(400);
	});

	it("accepts a matching eventid for every documented type", async () => {
		const types = [
			"delivered",
			"dropped",
			"bounce",
			"open",
			"click",
			"spamreport",
			"unsubscribe",
			"deferred",
		];
		const response = await postCallback(
			types.map((event, index) => ({ ...base, event, eventid: index + 1 })),
		);
		expect(await response.json()).toMatchObject({ stored: 8 });
	});
});

describe("subjects", () => {
	it.each([
		["UTF-8 base64", "=?UTF-8?B?5rWL6K+V6YKu5Lu2?=", "测试邮件"],
		["UTF-8 quoted-printable", "=?utf-8?Q?caf=C3=A9_au_lait?=", "café au lait"],
		["two words joined", "=?UTF-8?B?5rWL6K+V?= =?UTF-8?B?6YKu5Lu2?=", "测试邮件"],
		["mixed with plain text", "Re: =?UTF-8?Q?r=C3=A9sum=C3=A9?= attached", "Re: résumé attached"],
		["GBK", "=?GBK?B?suLK1NPKvP4=?=", "测试邮件"],
		["GB2312", "=?gb2312?B?suLK1NPKvP4=?=", "测试邮件"],
		["an unknown charset, kept", "=?x-unknown?B?5rWL?=", "=?x-unknown?B?5rWL?="],
		["broken base64, kept", "=?UTF-8?B?***?=", "=?UTF-8?B?***?="],
		["invalid UTF-8, kept", "=?UTF-8?B?/w==?=", "=?UTF-8?B?/w==?="],
		// UTF-16: a byte order mark starting each word is no part of the text, even mid-run; a
		// big-endian word without one may start with the bytes FF or FE (！ is FF 01, ︵ is FE 35).
		["UTF-16LE words, each marked", "=?UTF-16?B?//5LbQ==?= =?UTF-16?B?//7Viw==?=", "测试"],
		["UTF-16 unmarked, from FF", "=?UTF-16?B?/wFtS4vV?=", "！测试"],
		["UTF-16 unmarked, from FE", "=?UTF-16?B?/jVtS4vV?=", "︵测试"],
	])("%s", async (_name, subject, expected) => {
		await postCallback({ ...base, subject });
		expect((await onlyEvent(base.email)).subject).toBe(expected);
	});
});

describe("fields the schema does not model", () => {
	it("keeps custom headers and unknown fields unchanged", async () => {
		const unknown = {
			"X-Tencentcloudses-Cb-Order": "A-17",
			"x-tencentcloudses-cb-lower": "kept too",
			newField2027: { nested: [1, "two", null, { deep: true }] },
			score: 0.5,
			flag: false,
			nothing: null,
		};
		await postCallback({ ...base, ...unknown });
		const event = await onlyEvent(base.email);
		expect(event.custom).toEqual({
			"X-Tencentcloudses-Cb-Order": "A-17",
			"x-tencentcloudses-cb-lower": "kept too",
		});
		expect(event.extra).toEqual({
			newField2027: { nested: [1, "two", null, { deep: true }] },
			score: 0.5,
			flag: false,
			nothing: null,
		});
	});

	it("takes a null custom header as absent, kept in extra as received", async () => {
		const response = await postCallback({ ...base, "X-Tencentcloudses-Cb-Custom": null });
		expect(response.status).toBe(200);
		const event = await onlyEvent(base.email);
		expect(event.custom).toEqual({});
		expect(event.extra).toEqual({ "X-Tencentcloudses-Cb-Custom": null });
	});

	it("keeps numbers a double cannot hold digit for digit, in the events API's answer too", async () => {
		const fields =
			'"snowflake":12345678901234567891,"nested":{"list":[-98765432109876543210,1]},' +
			'"precise":0.12345678901234567891,"big":1e400,"safe":9007199254740991,"small":1.5';
		const body = `{"event":"open","email":"digits@example.com","timestamp":1767225600,${fields}}`;
		expect((await postCallback(body)).status).toBe(200);
		const response = await getJson("/v1/events?email=digits%40example.com");
		expect(await response.text()).toContain(`"extra":{${fields}}`);
	});

	it("keeps them in a request of more than five events, which travels as one JSON parameter", async () => {
		const events = Array.from(
			{ length: 6 },
			(_, i) =>
				`{"event":"open","email":"many${i}@example.com","timestamp":1767225600,"n":1234567890123456789${i}}`,
		);
		expect(await (await postCallback(`[${events.join(",")}]`)).json()).toMatchObject({ stored: 6 });
		const response = await getJson("/v1/events?email=many5%40example.com");
		expect(await response.text()).toContain('"extra":{"n":12345678901234567895}');
	});

	it("tells events apart by digits beyond a double's precision", async () => {
		// Both numbers round to the same double: parsed plainly, the second would be a duplicate.
		const event = (id: string) =>
			`{"event":"click","email":"twice@example.com","timestamp":1767225600,"clickId":${id}}`;
		const first = await postCallback(event("12345678901234567891"));
		const second = await postCallback(event("12345678901234567892"));
		expect(await first.json()).toMatchObject({ stored: 1, duplicates: 0 });
		expect(await second.json()).toMatchObject({ stored: 1, duplicates: 0 });
		const again = await postCallback(event("12345678901234567892"));
		expect(await again.json()).toMatchObject({ stored: 0, duplicates: 1 });
	});

	it("refuses a modeled number beyond 2^53 as before, and a lone long number as no event", async () => {
		const template = await postCallback(
			'{"event":"open","email":"t@example.com","timestamp":1767225600,"templateId":12345678901234567891}',
		);
		expect(template.status).toBe(400);
		expect((await template.json()) as Json).toMatchObject({
			error: {
				issues: [{ path: "templateId", message: expect.stringContaining("a template id") }],
			},
		});
		const lone = await postCallback("[12345678901234567891]");
		expect(lone.status).toBe(400);
		expect((await lone.json()) as Json).toMatchObject({
			error: { issues: [{ index: 0, path: "", message: "must be an event object" }] },
		});
		expect(await countRows("events")).toBe(0);
	});

	it("refuses a body nested too deep for the reviver for its depth, as without a long number", async () => {
		const deep = `${"[".repeat(5000)}12345678901234567891${"]".repeat(5000)}`;
		const response = await postCallback(
			`{"event":"open","email":"d@example.com","timestamp":1767225600,"deep":${deep}}`,
		);
		expect(response.status).toBe(400);
		expect((await response.json()) as Json).toMatchObject({
			error: {
				code: "invalid_event",
				issues: [{ path: "deep", message: expect.stringContaining("nested") }],
			},
		});
	});

	it.each([
		["timestamp", "1767225600.000000"],
		["timestamp", "1.767225600000000e9"],
		["templateId", "123456.0000000000"],
		["eventid", "4.000000000000000"],
	])("accepts %s written %s, whole with more than 15 digits", async (field, source) => {
		const timestamp = field === "timestamp" ? "" : '"timestamp":1767225600,';
		const body = `{"event":"open","email":"z@example.com",${timestamp}"${field}":${source}}`;
		expect((await postCallback(body)).status).toBe(200);
	});

	it("keeps a long number at the deepest level allowed", async () => {
		let nested = "12345678901234567891";
		for (let depth = 1; depth < 8; depth++) nested = `[${nested}]`;
		const body = `{"event":"open","email":"deep@example.com","timestamp":1767225600,"deep":${nested}}`;
		expect((await postCallback(body)).status).toBe(200);
		const response = await getJson("/v1/events?email=deep%40example.com");
		expect(await response.text()).toContain(`"deep":${nested}`);
	});

	it("keeps __proto__ and constructor as plain data", async () => {
		await postCallback(
			`{"event":"open","email":"p@example.com","timestamp":1,"__proto__":{"polluted":1},"constructor":"x"}`,
		);
		const event = await onlyEvent("p@example.com");
		expect(JSON.stringify(event.extra)).toBe('{"__proto__":{"polluted":1},"constructor":"x"}');
		expect(({} as Json).polluted).toBeUndefined();
	});
});

describe("addresses", () => {
	it.each([
		["Example@Example.COM", "example@example.com"],
		["  padded@example.com\t", "padded@example.com"],
		["first.last+tag@example.com", "first.last+tag@example.com"],
		["o'brien@example.ie", "o'brien@example.ie"],
		["用户@例子.广告", "用户@例子.广告"],
		["JOSÉ@Bücher.DE", "josé@bücher.de"],
		["jose\u0301@example.com", "josé@example.com"],
		['"quoted@local"@example.com', '"quoted@local"@example.com'],
	])("accepts %j as %j", async (email, normalised) => {
		const response = await postCallback({ ...base, email });
		expect(response.status).toBe(200);
		expect((await onlyEvent(normalised)).email).toBe(normalised);
	});

	it.each([
		["no at sign", "example.com"],
		["empty", ""],
		["white space inside", "a b@example.com"],
		["a new line", "a@example.com\nbcc@evil.com"],
		["a control character", "a\u0000@example.com"],
		["too long", `${"a".repeat(64)}@${"b".repeat(63)}.${"c".repeat(63)}.${"d".repeat(63)}.com`],
		["no domain", "a@"],
		["no local part", "@example.com"],
		["an empty label", "a@example..com"],
		["not a string", 42],
	])("refuses %s", async (_name, email) => {
		const response = await postCallback({ ...base, email });
		expect(response.status).toBe(400);
		const body = (await response.json()) as { error: { issues: Json[] } };
		expect(body.error.issues[0]?.path).toBe("email");
		expect(await countRows("events")).toBe(0);
	});
});

describe("storage failures", () => {
	it("answers 503 with Retry-After and leaves nothing half-written; a retry stores once", async () => {
		const events = [base, { ...base, event: "open" }, { ...base, event: "click" }];
		const failed = await postCallback(events, { env: envWithFailingBatch() });
		expect(failed.status).toBe(503);
		expect(failed.headers.get("retry-after")).toMatch(/^\d+$/);
		expect(await failed.json()).toEqual({
			error: { code: "storage_unavailable", message: "Storage is unavailable; retry later" },
		});
		expect(await countRows("events")).toBe(0);

		const retried = await postCallback(events);
		expect(await retried.json()).toEqual({ ok: true, received: 3, stored: 3, duplicates: 0 });
		expect(await (await postCallback(events)).json()).toMatchObject({ stored: 0, duplicates: 3 });
		expect(await countRows("events")).toBe(3);
	});
});

describe("probe", () => {
	it("answers GET and HEAD with the right token, 404 with a wrong one", async () => {
		const path = `/v1/callbacks/tencent/${tokens.callback}`;
		expect(await (await call(path)).json()).toEqual({ ok: true });
		expect((await call(path, { method: "HEAD" })).status).toBe(200);
		const wrong = await call("/v1/callbacks/tencent/not-the-token-at-all");
		expect(wrong.status).toBe(404);
		expect(await wrong.json()).toEqual({
			error: { code: "not_found", message: "No such resource" },
		});
	});

	it("reads a percent-encoded token as the token it encodes", async () => {
		const tilde = { ...env, CALLBACK_TOKENS: "cb-token~0123456789" };
		for (const segment of [
			"cb-token~0123456789",
			"cb-token%7E0123456789",
			"%63b-token%7e0123456789",
		]) {
			expect((await call(`/v1/callbacks/tencent/${segment}`, {}, tilde)).status).toBe(200);
		}
		for (const segment of [
			"cb-token%7E012345678",
			"cb-token%0123456789",
			"cb-token%7E0123456789%",
		]) {
			expect((await call(`/v1/callbacks/tencent/${segment}`, {}, tilde)).status).toBe(404);
		}
	});

	it("accepts any configured token, so one can be rotated", async () => {
		const rotating = { ...env, CALLBACK_TOKENS: `old-token-0123456789, ${tokens.callback}` };
		expect((await call("/v1/callbacks/tencent/old-token-0123456789", {}, rotating)).status).toBe(
			200,
		);
		expect((await call(`/v1/callbacks/tencent/${tokens.callback}`, {}, rotating)).status).toBe(200);
	});
});
