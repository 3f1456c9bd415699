import { env } from "cloudflare:workers";
import { beforeEach, describe, expect, it, vi } from "vitest";
import { KV_WRITE_SETTLE_SECONDS } from "../../src/cron/edge-repair";
import { LAG_KEY } from "../../src/suppressions/edge-lag";
import {
	call,
	countingD1,
	countingKv,
	countRows,
	envWithBatch,
	lookup,
	postCallback,
	putSuppression,
	resetDatabase,
	runCron,
	tokens,
} from "../helpers";

type ImportResult = {
	imported: number;
	unchanged: number;
	failed: Array<{ line: number; message: string }>;
};
const HEADER = "email,list,scope,reason,source,created_at,updated_at,expires_at";

async function exportText(query = ""): Promise<{ text: string; type: string | null }> {
	const response = await call(`/v1/suppressions/export${query}`, {
		headers: { authorization: `Bearer ${tokens.lookup}` },
	});
	expect(response.status).toBe(200);
	return { text: await response.text(), type: response.headers.get("content-type") };
}

async function importText(body: string, type = "text/csv"): Promise<Response> {
	return call("/v1/suppressions/import", {
		method: "POST",
		headers: { authorization: `Bearer ${tokens.admin}`, "content-type": type },
		body,
	});
}

async function imported(body: string, type = "text/csv"): Promise<ImportResult> {
	const response = await importText(body, type);
	expect(response.status).toBe(200);
	return (await response.json()) as ImportResult;
}

async function allEntries() {
	const response = await call("/v1/suppressions?limit=1000", {
		headers: { authorization: `Bearer ${tokens.lookup}` },
	});
	return ((await response.json()) as { entries: unknown[] }).entries;
}

const HOSTILE = [
	'=HYPERLINK("http://evil.example","click")',
	"+1 555 0100",
	"-2+3",
	"@SUM(A1:A2)",
	"'=already quoted",
	'comma, "quotes" and\nnew line\r\nand CRLF',
	"\ttab first",
	" padded ",
	"用户 ✉️ 😀",
];

async function seed(): Promise<void> {
	await postCallback([
		{
			event: "bounce",
			bounceType: "hard_bounce",
			email: "-dash@example.com",
			timestamp: 1000,
			reason: "550 =no such user",
		},
		{
			event: "unsubscribe",
			email: "u@example.com",
			timestamp: 1000,
			fromDomain: "news.example.com",
		},
		{ event: "spamreport", email: "用户@例子.广告", timestamp: 1000 },
	]);
	const inAWeek = Math.floor(Date.now() / 1000) + 7 * 86_400;
	for (const [i, reason] of HOSTILE.entries()) {
		await putSuppression(`hostile${i}@example.com`, {
			reason,
			...(i % 2 ? { expiresAt: inAWeek } : {}),
		});
	}
}

beforeEach(resetDatabase);

describe("export", () => {
	it("streams CSV with the contract's header, RFC 4180 quoting and formulas neutralised", async () => {
		await seed();
		const { text, type } = await exportText();
		expect(type).toBe("text/csv; charset=utf-8");
		const lines = text.split("\r\n");
		expect(lines[0]).toBe(HEADER);
		expect(text).toContain("'-dash@example.com,bounce,*,550 =no such user,event,");
		expect(text).toContain(`"'=HYPERLINK(""http://evil.example"",""click"")"`);
		expect(text).toContain(",'+1 555 0100,api,");
		expect(text).toContain(",'@SUM(A1:A2),api,");
		expect(text).toContain(`,"comma, ""quotes"" and\nnew line\r\nand CRLF",api,`);
		expect(text.endsWith("\r\n")).toBe(true);
	});

	it("streams NDJSON, one full entry per line, filtered", async () => {
		await seed();
		const { text, type } = await exportText("?format=ndjson&list=unsubscribe");
		expect(type).toBe("application/x-ndjson; charset=utf-8");
		const lines = text
			.trim()
			.split("\n")
			.map((line) => JSON.parse(line));
		expect(lines).toEqual([
			expect.objectContaining({
				email: "u@example.com",
				list: "unsubscribe",
				scope: "news.example.com",
				eventCount: 1,
			}),
		]);
	});

	it("pages through more entries than one D1 page", async () => {
		const lines = Array.from(
			{ length: 2500 },
			(_, i) => `bulk${String(i).padStart(4, "0")}@example.com,manual,*,,api,,,`,
		);
		expect(await imported([HEADER, ...lines].join("\n"))).toMatchObject({
			imported: 2500,
			failed: [],
		});
		const { text } = await exportText();
		expect(text.trim().split("\r\n")).toHaveLength(2501);
	});

	it("ends the stream with an error, not a short file, when a later page cannot be read", async () => {
		const lines = Array.from({ length: 1500 }, (_, i) => `cut${i}@example.com,manual,*,,api,,,`);
		await imported([HEADER, ...lines].join("\n"));
		let pages = 0;
		const db = new Proxy(env.DB, {
			get(target, property) {
				if (property === "prepare") {
					return (sql: string) => {
						if (sql.includes("FROM suppressions") && ++pages === 2) {
							throw new Error("D1_ERROR: injected");
						}
						return target.prepare(sql);
					};
				}
				const value = Reflect.get(target, property);
				return typeof value === "function" ? value.bind(target) : value;
			},
		});
		const response = await call(
			"/v1/suppressions/export",
			{ headers: { authorization: `Bearer ${tokens.lookup}` } },
			{ ...env, DB: db },
		);
		expect(response.status).toBe(200);
		await expect(response.text()).rejects.toThrow();
		expect(pages).toBe(2);
	});

	it("answers HEAD with the export's headers, reading no page for a body nobody gets", async () => {
		await imported([HEADER, "head@example.com,manual,*,,api,,,"].join("\n"));
		const counting = countingD1();
		const response = await call(
			"/v1/suppressions/export?format=ndjson",
			{ method: "HEAD", headers: { authorization: `Bearer ${tokens.lookup}` } },
			counting.env,
		);
		expect(response.status).toBe(200);
		expect(response.headers.get("content-type")).toBe("application/x-ndjson; charset=utf-8");
		expect(response.headers.get("content-disposition")).toMatch(
			/^attachment; filename="suppressions-\d{4}-\d{2}-\d{2}\.ndjson"$/,
		);
		expect(await response.text()).toBe("");
		expect(counting.counts).toMatchObject({ single: 0, batches: 0 });
	});
});

describe("export then import", () => {
	it.each(["csv", "ndjson"])(
		"round-trips every entry unchanged into an empty database (%s)",
		async (format) => {
			await seed();
			const before = await allEntries();
			expect(before).toHaveLength(12);
			const { text } = await exportText(`?format=${format}`);
			await resetDatabase();
			const result = await imported(text, format === "csv" ? "text/csv" : "application/x-ndjson");
			expect(result).toEqual({ imported: 12, unchanged: 0, failed: [] });
			const after = await allEntries();
			if (format === "ndjson") expect(after).toEqual(before);
			else {
				// CSV has no eventCount, lastEventAt or bulkId columns; every column it has comes back.
				const columns = (entries: unknown[]) =>
					(entries as Array<Record<string, unknown>>).map(
						({ eventCount, lastEventAt, bulkId, ...rest }) => rest,
					);
				expect(columns(after)).toEqual(columns(before));
			}
			expect(await imported(text, format === "csv" ? "text/csv" : "application/x-ndjson")).toEqual({
				imported: 0,
				unchanged: 12,
				failed: [],
			});
		},
	);
});

describe("export then import into the same database", () => {
	it.each(["csv", "ndjson"])("changes nothing (%s)", async (format) => {
		await seed();
		// A run of soft bounces makes an entry the export shows as an event entry too.
		const now = Math.floor(Date.now() / 1000);
		await postCallback(
			[1, 2, 3].map((i) => ({
				event: "bounce",
				bounceType: "soft_bounce",
				email: "full@example.com",
				timestamp: now - 3600 + i,
				bulkId: `bulk-${i}`,
			})),
		);
		const before = await allEntries();
		expect(before).toHaveLength(13);
		expect(before).toContainEqual(
			expect.objectContaining({ email: "full@example.com", eventCount: 3, bulkId: "bulk-3" }),
		);
		const history = await countRows("suppression_history");
		const { text } = await exportText(`?format=${format}`);
		const result = await imported(text, format === "csv" ? "text/csv" : "application/x-ndjson");
		expect(result).toEqual({ imported: 0, unchanged: 13, failed: [] });
		expect(await allEntries()).toEqual(before);
		expect(await countRows("suppression_history")).toBe(history);
	});

	it.each(["csv", "ndjson"])(
		"changes nothing when a live soft-bounce entry sits beside an expired single-event one (%s)",
		async (format) => {
			// The hard bounce's entry has run out, and the cron has not retired it yet: the export
			// shows the soft-bounce entry alone, and its line goes back to that entry.
			const policyEnv = { ...env, HARD_BOUNCE_SUPPRESS_DAYS: "1" } as Env;
			const email = "both@example.com";
			const t = Math.floor(Date.now() / 1000);
			vi.useFakeTimers({ toFake: ["Date"] });
			try {
				vi.setSystemTime(t * 1000);
				const hard = { event: "bounce", bounceType: "hard_bounce", email, timestamp: t - 10 };
				expect((await postCallback(hard, { env: policyEnv })).status).toBe(200);
				vi.setSystemTime((t + 2 * 86_400) * 1000);
				const soft = [3, 2, 1].map((i) => ({
					event: "bounce",
					bounceType: "soft_bounce",
					email,
					timestamp: t + 2 * 86_400 - 100 * i,
				}));
				expect((await postCallback(soft, { env: policyEnv })).status).toBe(200);
				const before = await allEntries();
				expect(before).toEqual([expect.objectContaining({ email, eventCount: 3 })]);
				const { text } = await exportText(`?format=${format}`);
				const type = format === "csv" ? "text/csv" : "application/x-ndjson";
				expect(await imported(text, type)).toEqual({ imported: 0, unchanged: 1, failed: [] });
				expect(await allEntries()).toEqual(before);
			} finally {
				vi.useRealTimers();
			}
		},
	);

	it.each(["csv", "ndjson"])(
		"changes nothing when the file lists a soft-bounce entry before the hard bounce's (%s)",
		async (format) => {
			const now = Math.floor(Date.now() / 1000);
			const email = "sorted@example.com";
			await postCallback(
				[300, 200, 100].map((ago) => ({
					event: "bounce",
					bounceType: "soft_bounce",
					email,
					timestamp: now - ago,
					reason: `soft ${ago}`,
				})),
			);
			await postCallback({
				event: "bounce",
				bounceType: "hard_bounce",
				email,
				timestamp: now - 50,
				reason: "hard",
			});
			const before = await allEntries();
			expect(before).toHaveLength(2);
			const { text } = await exportText(`?format=${format}`);
			// Sorted by expiry, as a spreadsheet would: the soft-bounce line first.
			const lines = text.split(/\r?\n/).filter((line) => line !== "");
			const sorted = format === "csv" ? [lines[0], lines[2], lines[1]] : [lines[1], lines[0]];
			const type = format === "csv" ? "text/csv" : "application/x-ndjson";
			expect(await imported(`${sorted.join("\n")}\n`, type)).toEqual({
				imported: 0,
				unchanged: 2,
				failed: [],
			});
			expect(await allEntries()).toEqual(before);
		},
	);

	it("sets the event fields an NDJSON line does carry, null included", async () => {
		await seed();
		const line = {
			email: "-dash@example.com",
			list: "bounce",
			scope: "*",
			source: "event",
			eventCount: 0,
			lastEventAt: null,
			bulkId: null,
		};
		expect(await imported(JSON.stringify(line), "application/x-ndjson")).toMatchObject({
			imported: 1,
		});
		const entry = (await lookup("-dash@example.com", "?consistent=true")).entries[0];
		expect(entry).toMatchObject({ eventCount: 0, lastEventAt: null, bulkId: null });
	});
});

describe("export then import, the awkward cases", () => {
	const TYPES = { csv: "text/csv", ndjson: "application/x-ndjson" } as const;

	it.each(["csv", "ndjson"] as const)(
		"round-trips an address with both a hard-bounce and a soft-bounce entry (%s)",
		async (format) => {
			const now = Math.floor(Date.now() / 1000);
			await postCallback([
				{
					event: "bounce",
					bounceType: "hard_bounce",
					email: "x@example.com",
					timestamp: now - 4000,
				},
				...[1, 2, 3].map((i) => ({
					event: "bounce",
					bounceType: "soft_bounce",
					email: "x@example.com",
					timestamp: now - 3600 + i,
					reason: `soft ${i}`,
				})),
			]);
			const before = await allEntries();
			expect(before).toHaveLength(2);
			const { text } = await exportText(`?format=${format}`);
			expect(await imported(text, TYPES[format])).toEqual({
				imported: 0,
				unchanged: 2,
				failed: [],
			});
			await resetDatabase();
			expect(await imported(text, TYPES[format])).toEqual({
				imported: 2,
				unchanged: 0,
				failed: [],
			});
			const after = (await lookup("x@example.com", "?consistent=true")).entries;
			expect(after.map((entry) => [entry.reason, entry.expiresAt === null])).toEqual(
				(before as Array<{ reason: string; expiresAt: string | null }>).map((entry) => [
					entry.reason,
					entry.expiresAt === null,
				]),
			);
			expect(await imported(text, TYPES[format])).toEqual({
				imported: 0,
				unchanged: 2,
				failed: [],
			});
		},
	);

	it("a single event line for an address with both bounce entries updates the single-event one", async () => {
		const now = Math.floor(Date.now() / 1000);
		await postCallback([
			{ event: "bounce", bounceType: "hard_bounce", email: "x@example.com", timestamp: now - 4000 },
			...[1, 2, 3].map((i) => ({
				event: "bounce",
				bounceType: "soft_bounce",
				email: "x@example.com",
				timestamp: now - 3600 + i,
				reason: `soft ${i}`,
			})),
		]);
		const line = {
			email: "x@example.com",
			list: "bounce",
			scope: "*",
			source: "event",
			reason: "edited",
		};
		expect(await imported(JSON.stringify(line), TYPES.ndjson)).toMatchObject({ imported: 1 });
		const after = (await lookup("x@example.com", "?consistent=true")).entries;
		expect(
			after
				.map((entry) => `${entry.reason} ${entry.expiresAt === null ? "never" : "expires"}`)
				.sort(),
		).toEqual(["edited never", "soft 3 expires"]);
	});

	it.each([
		["eventCount", 7],
		["lastEventAt", "2026-01-02T03:04:05Z"],
		["bulkId", "bulk-9"],
		["createdAt", "2026-01-01T00:00:00Z"],
		["updatedAt", "2026-01-03T00:00:00Z"],
		["expiresAt", "2099-01-01T00:00:00Z"],
	])("a line that changes only %s updates the entry", async (field, value) => {
		// Made before the values above, so that none of them comes before the entry's creation.
		const made = Date.parse("2026-01-02T00:00:00Z");
		vi.useFakeTimers({ toFake: ["Date"] });
		try {
			vi.setSystemTime(made);
			await postCallback({
				event: "bounce",
				bounceType: "hard_bounce",
				email: "z@example.com",
				timestamp: made / 1000 - 60,
				bulkId: "bulk-1",
			});
		} finally {
			vi.useRealTimers();
		}
		const { text } = await exportText("?format=ndjson");
		const line = { ...(JSON.parse(text.trim()) as Record<string, unknown>), [field]: value };
		expect(await imported(JSON.stringify(line), TYPES.ndjson)).toMatchObject({ imported: 1 });
		const [entry] = (await lookup("z@example.com", "?consistent=true")).entries;
		expect(entry).toMatchObject({ [field]: value });
		// The change is the import's, not the event's that made the entry.
		const response = await call("/v1/suppressions/z%40example.com/history", {
			headers: { authorization: `Bearer ${tokens.lookup}` },
		});
		const { history } = (await response.json()) as { history: Array<Record<string, unknown>> };
		expect(history.at(-1)).toMatchObject({ eventId: null, note: "imported" });
	});

	it("still refuses a third event line for the same bounce entry", async () => {
		const line = (reason: string) =>
			JSON.stringify({
				email: "y@example.com",
				list: "bounce",
				scope: "*",
				source: "event",
				reason,
			});
		const result = await imported([line("a"), line("b"), line("c")].join("\n"), TYPES.ndjson);
		expect(result).toEqual({
			imported: 2,
			unchanged: 0,
			failed: [{ line: 3, message: "repeats the entry of line 1" }],
		});
	});

	it("round-trips an event's reason of 4096 characters", async () => {
		const reason = `550 5.1.1 ${"x".repeat(4086)}`;
		const now = Math.floor(Date.now() / 1000);
		await postCallback({
			event: "bounce",
			bounceType: "hard_bounce",
			email: "long@example.com",
			timestamp: now - 60,
			reason,
		});
		const { text } = await exportText("?format=ndjson");
		await resetDatabase();
		expect(await imported(text, TYPES.ndjson)).toEqual({ imported: 1, unchanged: 0, failed: [] });
		expect((await lookup("long@example.com", "?consistent=true")).entries[0]?.reason).toBe(reason);
	});

	it("imports a line without times again as unchanged, keeping when the entry was made", async () => {
		const body = `${HEADER}\r\nmin@example.com,manual,*,asked,api,,,\r\n`;
		expect(await imported(body)).toEqual({ imported: 1, unchanged: 0, failed: [] });
		const first = (await lookup("min@example.com", "?consistent=true")).entries[0];
		await new Promise((resolve) => setTimeout(resolve, 1100));
		expect(await imported(body)).toEqual({ imported: 0, unchanged: 1, failed: [] });
		expect((await lookup("min@example.com", "?consistent=true")).entries[0]).toEqual(first);
		// A changed reason is a change made now.
		const changed = `${HEADER}\r\nmin@example.com,manual,*,asked again,api,,,\r\n`;
		expect(await imported(changed)).toEqual({ imported: 1, unchanged: 0, failed: [] });
		const after = (await lookup("min@example.com", "?consistent=true")).entries[0];
		expect(after?.createdAt).toBe(first?.createdAt);
		expect(Date.parse(after?.updatedAt ?? "")).toBeGreaterThan(Date.parse(first?.updatedAt ?? ""));
	});

	it("writes a large import in statements of at most 1 MB each", async () => {
		const lines = Array.from({ length: 600 }, (_, i) =>
			JSON.stringify({
				email: `big${i}@example.com`,
				list: "manual",
				scope: "*",
				reason: "é".repeat(4000),
			}),
		);
		const sizes: number[] = [];
		const counting = envWithBatch((batch, statements) => {
			sizes.push(statements.length);
			return batch(statements);
		});
		const response = await call(
			"/v1/suppressions/import",
			{
				method: "POST",
				headers: { authorization: `Bearer ${tokens.admin}`, "content-type": TYPES.ndjson },
				body: lines.join("\n"),
			},
			counting,
		);
		expect(await response.json()).toEqual({ imported: 600, unchanged: 0, failed: [] });
		// 600 lines of 8,000 bytes of reason are 4.8 MB: five statements of at most 1 MB.
		expect(sizes[0]).toBeGreaterThanOrEqual(5);
		expect(await countRows("suppressions")).toBe(600);
	});
});

describe("import", () => {
	it("names a CSV line's fields by its columns", async () => {
		const body = [
			HEADER,
			"a@example.com,manual,*,,api,2026-01-02T00:00:00Z,2026-01-01T00:00:00Z,",
			"b@example.com,manual,*,,api,2999-01-01T00:00:00Z,,",
			"c@example.com,manual,*,,api,,2999-01-01T00:00:00Z,",
			"d@example.com,manual,*,,api,,,tomorrow",
		].join("\n");
		expect((await imported(body)).failed).toEqual([
			{ line: 2, message: "created_at is after updated_at" },
			{ line: 3, message: "created_at is in the future" },
			{ line: 4, message: "updated_at is in the future" },
			{ line: 5, message: expect.stringMatching(/^expires_at must be/) },
		]);
	});

	it("fails a line that expires the second the import runs, and takes one a second later", async () => {
		const now = Date.parse("2030-01-01T00:00:00Z");
		vi.useFakeTimers({ toFake: ["Date"] });
		try {
			vi.setSystemTime(now);
			const body = [
				HEADER,
				"at-now@example.com,manual,*,,api,,,2030-01-01T00:00:00Z",
				"after-now@example.com,manual,*,,api,,,2030-01-01T00:00:01Z",
			].join("\n");
			expect(await imported(body)).toEqual({
				imported: 1,
				unchanged: 0,
				failed: [{ line: 2, message: "has already expired" }],
			});
		} finally {
			vi.useRealTimers();
		}
		expect(await countRows("suppressions")).toBe(1);
	});

	it("refuses a header with a column more than the export's", async () => {
		const response = await importText(
			[`${HEADER},note`, "extra@example.com,manual,*,,api,,,,hello"].join("\n"),
		);
		expect(response.status).toBe(400);
		expect(((await response.json()) as { error: { message: string } }).error.message).toBe(
			`The first line must be the header ${HEADER}`,
		);
		expect(await countRows("suppressions")).toBe(0);
	});

	it("reports each bad line and imports the rest", async () => {
		const body = [
			HEADER,
			"ok1@example.com,manual,*,fine,api,,,",
			"not-an-address,manual,*,,api,,,",
			"ok2@example.com,vip,*,,api,,,",
			"ok3@example.com,manual,not a domain,,api,,,",
			"ok4@example.com,manual,*,,api,,,2020-01-01T00:00:00Z",
			"ok1@example.com,manual,*,again,api,,,",
			'ok5@example.com,manual,*,"unterminated,api,,,',
		].join("\r\n");
		const result = await imported(body);
		expect(result.imported).toBe(1);
		expect(result.failed.map((failure) => failure.line)).toEqual([3, 4, 5, 6, 7, 8]);
		expect(result.failed[0]?.message).toBe("email must contain @");
		expect(result.failed[3]?.message).toBe("has already expired");
		expect(result.failed[4]?.message).toBe("repeats the entry of line 2");
		expect((await lookup("ok1@example.com", "?consistent=true")).entries[0]?.reason).toBe("fine");
	});

	it("fails a CSV line of too few or too many fields, reading no more than 100 of them", async () => {
		const body = [
			HEADER,
			"f1@example.com,manual,*,,api,,,",
			"f2@example.com,manual,*,,api,,,,",
			"f3@example.com,manual,*,,api,,",
			`f4@example.com${",".repeat(100_000)}`,
			"f5@example.com,manual,*,,api,,,",
		].join("\n");
		expect(await imported(body)).toEqual({
			imported: 2,
			unchanged: 0,
			failed: [
				{ line: 3, message: "has 9 fields, expected 8" },
				{ line: 4, message: "has 7 fields, expected 8" },
				{ line: 5, message: "A record may have at most 100 fields." },
			],
		});
	});

	it("puts imported entries in KV", async () => {
		await imported([HEADER, "kv@example.com,manual,*,,api,,,"].join("\n"));
		expect((await lookup("kv@example.com")).suppressed).toBe(true);
	});

	it("counts each changed line, and writes an address's key once however many lines it has", async () => {
		const kv = countingKv();
		const response = await call(
			"/v1/suppressions/import",
			{
				method: "POST",
				headers: { authorization: `Bearer ${tokens.admin}`, "content-type": "text/csv" },
				body: [
					HEADER,
					"two@example.com,manual,*,,api,,,",
					"two@example.com,complaint,*,,event,,,",
				].join("\n"),
			},
			kv.env,
		);
		expect(await response.json()).toEqual({ imported: 2, unchanged: 0, failed: [] });
		// KV takes one write per key per second: a second put would be refused.
		expect(kv.counts.put).toBe(1);
		expect((await lookup("two@example.com")).entries).toHaveLength(2);
	});

	it("leaves what one request cannot push to KV to the cron, and lookups read D1 until then", async () => {
		const lines = Array.from({ length: 450 }, (_, i) => `q${i}@example.com,complaint,*,,event,,,`);
		await imported([HEADER, ...lines].join("\n"));
		// 400 at once; all 450 queued for the cron's check.
		expect(await env.SUPPRESSIONS.get("s:q0@example.com")).not.toBeNull();
		expect(await env.SUPPRESSIONS.get("s:q449@example.com")).toBeNull();
		expect(await countRows("edge_pending")).toBe(450);
		// KV is marked as lagging: an address it has no key for is read from D1.
		expect((await lookup("q449@example.com")).suppressed).toBe(true);
		expect(await env.SUPPRESSIONS.get(LAG_KEY)).not.toBeNull();
		// The cron's next run, once the import's own KV writes have landed.
		await runCron(Date.now() + (KV_WRITE_SETTLE_SECONDS + 1) * 1000);
		expect(await countRows("edge_pending")).toBe(0);
		expect(await env.SUPPRESSIONS.get("s:q449@example.com")).not.toBeNull();
		expect((await lookup("q449@example.com")).suppressed).toBe(true);
	});

	it("answers an import whose KV sync fails, and leaves the keys to the cron", async () => {
		const warnings: Record<string, unknown>[] = [];
		const spy = vi.spyOn(console, "warn").mockImplementation((line: string) => {
			warnings.push(JSON.parse(line));
		});
		// KV refuses the bulk read the sync starts with, after D1 took the entries.
		const failing = countingKv({ get: true });
		const response = await call(
			"/v1/suppressions/import",
			{
				method: "POST",
				headers: { authorization: `Bearer ${tokens.admin}`, "content-type": "text/csv" },
				body: [HEADER, "late@example.com,manual,*,,api,,,"].join("\n"),
			},
			failing.env,
		).finally(() => spy.mockRestore());
		expect(response.status).toBe(200);
		expect(await response.json()).toEqual({ imported: 1, unchanged: 0, failed: [] });
		expect(warnings).toEqual([
			expect.objectContaining({
				message: "import edge sync failed",
				requestId: expect.any(String),
				error: expect.stringContaining("injected failure"),
			}),
		]);
		// No key written; only the mark that KV lags, so that lookups read the address from D1.
		expect(failing.counts.put).toBe(1);
		expect(await env.SUPPRESSIONS.get("s:late@example.com")).toBeNull();
		expect((await lookup("late@example.com")).suppressed).toBe(true);
		expect(await countRows("edge_pending")).toBe(1);
		await runCron(Date.now() + (KV_WRITE_SETTLE_SECONDS + 1) * 1000);
		expect(await env.SUPPRESSIONS.get("s:late@example.com")).not.toBeNull();
	});

	it.each([
		["no header", "a@example.com,manual,*,,api,,,", 400],
		["a wrong header", "mail,list\na@example.com,manual", 400],
		// The first record is not the header, even though CSV cannot read it.
		["a bad line before the header", `a"b,c\n${HEADER}\na@example.com,manual,*,,api,,,`, 400],
		[
			"too many lines",
			[
				HEADER,
				...Array.from({ length: 10_001 }, (_, i) => `x${i}@example.com,manual,*,,api,,,`),
			].join("\n"),
			400,
		],
	])("refuses %s", async (_name, body, status) => {
		const response = await importText(body);
		expect(response.status).toBe(status);
		expect(await countRows("suppressions")).toBe(0);
	});

	it("refuses an NDJSON body of one line more than an import holds, not taking the first 10,000", async () => {
		const lines = Array.from(
			{ length: 10_001 },
			(_, i) => `{"email":"x${i}@example.com","list":"manual","scope":"*"}`,
		);
		const response = await importText(lines.join("\n"), "application/x-ndjson");
		expect(response.status).toBe(400);
		expect(await countRows("suppressions")).toBe(0);
	});

	it("refuses a body that is not UTF-8 and a content type it does not read", async () => {
		expect((await importText("a@example.com", "application/json")).status).toBe(415);
		// No content type at all (a byte body gets none) is refused the same way.
		const untyped = await call("/v1/suppressions/import", {
			method: "POST",
			headers: { authorization: `Bearer ${tokens.admin}` },
			body: new TextEncoder().encode([HEADER, "a@example.com,manual,*,,api,,,"].join("\n")),
		});
		expect(untyped.status).toBe(415);
		expect(((await untyped.json()) as { error: { code: string } }).error.code).toBe(
			"unsupported_media_type",
		);
		expect(await countRows("suppressions")).toBe(0);
		const response = await call("/v1/suppressions/import", {
			method: "POST",
			headers: { authorization: `Bearer ${tokens.admin}`, "content-type": "text/csv" },
			body: new Uint8Array([0xff, 0xfe]),
		});
		expect(response.status).toBe(400);
	});

	it("reads NDJSON with per-line JSON errors", async () => {
		const body = [
			'{"email":"n@example.com","list":"manual","scope":"*"}',
			"{oops",
			"",
			'{"email":"m@example.com","list":"bounce","scope":"*","source":"event","eventCount":3}',
		].join("\n");
		const result = await imported(body, "application/x-ndjson");
		expect(result).toEqual({
			imported: 2,
			unchanged: 0,
			failed: [{ line: 2, message: "is not valid JSON" }],
		});
		expect((await lookup("m@example.com", "?consistent=true")).entries[0]).toMatchObject({
			source: "event",
			eventCount: 3,
		});
	});

	it("says so of an NDJSON line that is JSON but not an object", async () => {
		const body = ["42", '["a@example.com","manual"]', "null", '"a@example.com"'].join("\n");
		const message = "is not a JSON object";
		expect(await imported(body, "application/x-ndjson")).toEqual({
			imported: 0,
			unchanged: 0,
			failed: [1, 2, 3, 4].map((line) => ({ line, message })),
		});
	});

	it("says what a missing address or a field of the wrong type should be", async () => {
		const entry = '"list":"manual","scope":"*"';
		const body = [
			`{${entry}}`,
			`{"email":5,${entry}}`,
			`{"email":"a@example.com",${entry},"reason":5}`,
			`{"email":"b@example.com",${entry},"bulkId":["x"]}`,
		].join("\n");
		expect(await imported(body, "application/x-ndjson")).toEqual({
			imported: 0,
			unchanged: 0,
			failed: [
				{ line: 1, message: "email is required" },
				{ line: 2, message: "email must be a string" },
				{ line: 3, message: "reason must be a string or null" },
				{ line: 4, message: "bulkId must be a string or null" },
			],
		});
	});

	it("fails an NDJSON line with a field an entry does not have, never ignoring it", async () => {
		const body = [
			'{"email":"n@example.com","list":"manual","scope":"*","expires_at":"2030-01-01T00:00:00Z"}',
			'{"email":"o@example.com","list":"manual","scope":"*","colour":"red","size":2}',
		].join("\n");
		expect(await imported(body, "application/x-ndjson")).toEqual({
			imported: 0,
			unchanged: 0,
			failed: [
				{ line: 1, message: "expires_at is not a field of an entry" },
				{ line: 2, message: "colour, size are not fields of an entry" },
			],
		});
		expect(await countRows("suppressions")).toBe(0);
	});

	it("fails an NDJSON line that names a field twice, importing neither value", async () => {
		// JSON.parse would keep the last: one of the two addresses, an entry that never expires.
		const body = [
			'{"email":"p@example.com","email":"q@example.com","list":"manual","scope":"*"}',
			'{"email":"r@example.com","list":"manual","scope":"*","expiresAt":"2099-01-01T00:00:00Z","expiresAt":null}',
		].join("\n");
		expect(await imported(body, "application/x-ndjson")).toEqual({
			imported: 0,
			unchanged: 0,
			failed: [
				{ line: 1, message: 'names the field "email" more than once' },
				{ line: 2, message: 'names the field "expiresAt" more than once' },
			],
		});
		expect(await countRows("suppressions")).toBe(0);
	});

	it("names a long repeated field of an NDJSON line by its first 100 characters only", async () => {
		const name = `${"b".repeat(100)}c`;
		const body = `{"email":"p@example.com","list":"manual","scope":"*","${name}":1,"${name}":2}`;
		expect(await imported(body, "application/x-ndjson")).toEqual({
			imported: 0,
			unchanged: 0,
			failed: [{ line: 1, message: `names the field "${"b".repeat(100)}…" more than once` }],
		});
	});

	it("fails an NDJSON line whose bulkId is not well-formed Unicode, storing nothing", async () => {
		// JSON may escape a lone surrogate; D1 would have stored it as three U+FFFD.
		const body = [
			'{"email":"s@example.com","list":"bounce","scope":"*","source":"event","bulkId":"a\\ud800b"}',
			'{"email":"t@example.com","list":"bounce","scope":"*","source":"event","bulkId":"\\udc00"}',
		].join("\n");
		const message = "bulkId must be well-formed Unicode (no lone surrogates)";
		expect(await imported(body, "application/x-ndjson")).toEqual({
			imported: 0,
			unchanged: 0,
			failed: [
				{ line: 1, message },
				{ line: 2, message },
			],
		});
		expect(await countRows("suppressions")).toBe(0);
	});

	it("says what eventCount takes when a line's is not a count", async () => {
		const body = ["1e300", "12345678901234567890", "1.5", '"3"', "-1"].map(
			(count, i) =>
				`{"email":"count${i}@example.com","list":"manual","scope":"*","eventCount":${count}}`,
		);
		const whole = "eventCount must be a whole number";
		expect(await imported(body.join("\n"), "application/x-ndjson")).toEqual({
			imported: 0,
			unchanged: 0,
			failed: [
				{ line: 1, message: whole },
				{ line: 2, message: whole },
				{ line: 3, message: whole },
				{ line: 4, message: whole },
				{ line: 5, message: "eventCount must be 0 or more" },
			],
		});
	});

	it("takes a bulkId of at most 512 characters, as a callback does", async () => {
		const body = [512, 513].map(
			(length, i) =>
				`{"email":"long${i}@example.com","list":"bounce","scope":"*","source":"event","bulkId":"${"b".repeat(length)}"}`,
		);
		expect(await imported(body.join("\n"), "application/x-ndjson")).toEqual({
			imported: 1,
			unchanged: 0,
			failed: [{ line: 2, message: "bulkId must be at most 512 characters" }],
		});
	});

	it("stores a blank imported bulkId as none, as a callback does", async () => {
		const body = ['"   "', '""'].map(
			(bulkId, i) =>
				`{"email":"blank${i}@example.com","list":"bounce","scope":"*","source":"event","bulkId":${bulkId}}`,
		);
		expect(await imported(body.join("\n"), "application/x-ndjson")).toMatchObject({
			imported: 2,
		});
		for (const email of ["blank0@example.com", "blank1@example.com"]) {
			const { entries } = await lookup(email, "?consistent=true");
			expect(entries).toEqual([expect.objectContaining({ bulkId: null })]);
		}
	});

	it("needs an admin token", async () => {
		const response = await call("/v1/suppressions/import", {
			method: "POST",
			headers: { authorization: `Bearer ${tokens.lookup}`, "content-type": "text/csv" },
			body: HEADER,
		});
		expect(response.status).toBe(403);
		expect(env.ADMIN_TOKENS).not.toBe(tokens.lookup);
	});
});
