import { env } from "cloudflare:workers";
import { beforeEach, describe, expect, it } from "vitest";
import {
	call,
	entriesOf,
	lookup,
	postCallback,
	putSuppression,
	resetDatabase,
	runCron,
	tokens,
} from "../helpers";

/**
 * Two spellings of one mailbox or one sender domain must be one key: otherwise a sender is told
 * "deliverable" for an address the service holds as suppressed. Everything goes through the
 * Worker's fetch against local D1 and KV.
 */

type CheckResult = { email: string; normalized: string; deliverable: boolean; invalid?: true };

async function check(emails: string[], fromDomain?: string): Promise<CheckResult[]> {
	const response = await call("/v1/suppressions/check", {
		method: "POST",
		headers: { authorization: `Bearer ${tokens.lookup}` },
		body: JSON.stringify({ emails, ...(fromDomain === undefined ? {} : { fromDomain }) }),
	});
	expect(response.status).toBe(200);
	return ((await response.json()) as { results: CheckResult[] }).results;
}

async function event(fields: Record<string, unknown>): Promise<void> {
	const response = await postCallback({ timestamp: 1_700_000_000, ...fields });
	expect(response.status).toBe(200);
}

const unsubscribe = (email: string, fromDomain: string) =>
	event({ event: "unsubscribe", email, fromDomain });
const hardBounce = (email: string) =>
	event({ event: "bounce", bounceType: "hard_bounce", email, reason: "550 5.1.1 no such user" });

beforeEach(resetDatabase);

describe("an unsubscribe's scope and the fromDomain of a lookup name one domain however spelt", () => {
	it.each([
		["a trailing dot on the event's domain", "news.example.com.", "news.example.com"],
		["a trailing dot on the lookup's domain", "News.Example.com", "news.example.com."],
		["an IDN in Unicode, looked up in punycode", "bücher.de", "xn--bcher-kva.de"],
		["an IDN in punycode, looked up in Unicode", "XN--BCHER-KVA.DE", "BÜCHER.de"],
		["fullwidth letters and dot", "ｎｅｗｓ．example.com", "news.example.com"],
	])("%s", async (_, scope, fromDomain) => {
		await unsubscribe("reader@example.org", scope);
		const query = `?fromDomain=${encodeURIComponent(fromDomain)}`;
		for (const consistent of ["", "&consistent=true"]) {
			expect((await lookup("reader@example.org", query + consistent)).suppressed).toBe(true);
		}
		const [result] = await check(["reader@example.org"], fromDomain);
		expect(result?.deliverable).toBe(false);
		// Another domain is still deliverable: the scope was not widened to every sender.
		const [other] = await check(["reader@example.org"], "shop.example.com");
		expect(other?.deliverable).toBe(true);
	});

	it("an operator's entry for a domain with a trailing dot applies to that domain", async () => {
		await putSuppression("reader@example.org", { scope: "news.example.com." });
		const [result] = await check(["reader@example.org"], "NEWS.example.com");
		expect(result?.deliverable).toBe(false);
	});

	it.each([
		["a trailing dot", "News.Example.com.", "news.example.com", "NEWS.example.com"],
		["an IDN in Unicode, removed in punycode", "bücher.de", "xn--bcher-kva.de", "BÜCHER.de."],
		["an IDN in punycode, removed in Unicode", "xn--bcher-kva.de", "BÜCHER.de", "bücher.de"],
	])(
		"a removal scoped to the domain in another spelling (%s) lifts the entry",
		async (_, stored, scope, fromDomain) => {
			await unsubscribe("reader@example.org", stored);
			await unsubscribe("reader@example.org", "shop.example.com");
			await putSuppression("reader@example.org", { list: "unsubscribe", scope: stored });
			const response = await call(
				`/v1/suppressions/reader%40example.org?list=unsubscribe&scope=${encodeURIComponent(scope)}`,
				{ method: "DELETE", headers: { authorization: `Bearer ${tokens.admin}` } },
			);
			// The event's entry and the operator's: each spelling of the domain, no other domain.
			expect(await response.json()).toEqual({ email: "reader@example.org", removed: 2 });
			const query = `?fromDomain=${encodeURIComponent(fromDomain)}`;
			for (const consistent of ["", "&consistent=true"]) {
				expect((await lookup("reader@example.org", query + consistent)).suppressed).toBe(false);
			}
			expect((await check(["reader@example.org"], fromDomain))[0]?.deliverable).toBe(true);
			expect((await check(["reader@example.org"], "shop.example.com"))[0]?.deliverable).toBe(false);
			// The removal holds against an older unsubscribe in the spelling that was stored.
			await event({
				event: "unsubscribe",
				email: "reader@example.org",
				fromDomain: stored,
				timestamp: 1_600_000_000,
			});
			expect((await lookup("reader@example.org", `${query}&consistent=true`)).suppressed).toBe(
				false,
			);
		},
	);
});

describe("an unsubscribe's fromDomain that no lookup, filter or import could name", () => {
	// The callback takes any string as fromDomain; lookups, PUT, imports and filters take only a
	// domain name. A scope outside that rule could never equal a lookup's fromDomain, and an
	// export of it could not be imported again.
	it.each([
		["an address", { fromDomain: "news@example.com", from: "news@example.com" }, "example.com"],
		["a list of domains", { fromDomain: "news.example.com, shop.example.com" }, "news.example.com"],
		["a URL", { fromDomain: "https://news.example.com/" }, "news.example.com"],
		[
			"a domain closing a display form",
			{ fromDomain: "example.com>", from: "news@example.com" },
			"example.com",
		],
		["a domain with a special character", { fromDomain: "news.example.com;" }, "news.example.com"],
		["a bracketed literal", { fromDomain: "[news.example.com]" }, "news.example.com"],
	])("%s is not a scope", async (_, fields, sender) => {
		await event({ event: "unsubscribe", email: "reader@example.org", ...fields });
		const [result] = await check(["reader@example.org"], sender);
		expect(result?.deliverable).toBe(false);
		const exported = await call("/v1/suppressions/export?format=ndjson", {
			headers: { authorization: `Bearer ${tokens.lookup}` },
		});
		const imported = await call("/v1/suppressions/import", {
			method: "POST",
			headers: { authorization: `Bearer ${tokens.admin}`, "content-type": "application/x-ndjson" },
			body: await exported.text(),
		});
		expect(await imported.json()).toEqual({ imported: 0, unchanged: 1, failed: [] });
	});
});

describe("spellings that are already one key", () => {
	it.each([
		["upper case in the local part and the domain", "reader@example.org", "Reader@Example.ORG"],
		["surrounding white space", "reader@example.org", "  reader@example.org\t"],
		["NFC stored, NFD checked", "réader@example.org", "réader@example.org".normalize("NFD")],
		["NFD stored, NFC checked", "réader@example.org".normalize("NFD"), "réader@example.org"],
	])("%s", async (_, stored, checked) => {
		await hardBounce(stored);
		const [result] = await check([checked]);
		expect(result?.deliverable).toBe(false);
		expect((await lookup(checked)).suppressed).toBe(true);
	});

	it("Unicode local parts in NFC and NFD, any case, on the callback, PUT, lookup and check", async () => {
		await hardBounce("RÉADER@example.org".normalize("NFD"));
		await putSuppression("réader@EXAMPLE.org", {});
		const found = await lookup("Réader@example.org".normalize("NFC"), "?consistent=true");
		expect(found.entries.map((entry) => entry.list).sort()).toEqual(["bounce", "manual"]);
		const [result] = await check(["réader@example.org".normalize("NFD")]);
		expect(result).toMatchObject({ normalized: "réader@example.org", deliverable: false });
	});

	it("percent-encoded @ and + in the path, and a literal + in it", async () => {
		await hardBounce("a+tag@example.com");
		for (const path of ["a%2Btag%40example.com", "a+tag@example.com", "A%2BTAG@EXAMPLE.COM"]) {
			const response = await call(`/v1/suppressions/${path}`, {
				headers: { authorization: `Bearer ${tokens.lookup}` },
			});
			expect(await response.json()).toMatchObject({ email: "a+tag@example.com", suppressed: true });
		}
	});
});

describe("an address too long for a plain KV key", () => {
	// 512 bytes of UTF-8 in 190 characters: "s:" and the address would pass KV's 512-byte key limit.
	const label = "漢".repeat(60);
	const long = `${"a".repeat(22)}@${label}.${label}.${"漢".repeat(41)}.com`;

	it("is kept under its hash, found at the edge and in a check, and kept by the cron", async () => {
		expect(new TextEncoder().encode(long).length).toBe(512);
		await hardBounce(long);
		const keys = (await env.SUPPRESSIONS.list()).keys;
		expect(keys).toEqual([
			{ name: expect.stringMatching(/^h:[0-9a-f]{64}$/), metadata: { email: long } },
		]);
		expect((await lookup(long)).suppressed).toBe(true);
		expect((await check([long]))[0]?.deliverable).toBe(false);
		// A whole reconcile cycle: the key's owner is read from its metadata, so it stays.
		await runCron(Date.now() + 300_000);
		await runCron(Date.now() + 600_000);
		expect((await env.SUPPRESSIONS.list()).keys).toEqual(keys);
		expect((await lookup(long)).suppressed).toBe(true);
	});

	/** The address's `h:` key, rewritten with `metadata` and the value it holds. */
	async function rewriteMetadata(metadata: unknown): Promise<string> {
		const [key] = (await env.SUPPRESSIONS.list()).keys;
		const name = key?.name ?? "";
		expect(name).toMatch(/^h:/);
		await env.SUPPRESSIONS.put(name, (await env.SUPPRESSIONS.get(name)) ?? "", { metadata });
		return name;
	}

	const sweep = async () => {
		await runCron(Date.now() + 300_000);
		await runCron(Date.now() + 600_000);
	};

	it("is kept by the cron when its metadata no longer names its address, and stays suppressed", async () => {
		await hardBounce(long);
		// The address as a transport that took UTF-8 for Latin-1 would give it back.
		const altered = String.fromCharCode(...new TextEncoder().encode(long));
		const name = await rewriteMetadata({ email: altered });
		// After each run: one run's D1 sweep would write a deleted key again, a run later.
		for (const minutes of [5, 10, 15]) {
			await runCron(Date.now() + minutes * 60_000);
			expect(
				(await env.SUPPRESSIONS.list()).keys.map((key) => key.name),
				`${minutes}`,
			).toEqual([name]);
			expect((await lookup(long)).suppressed).toBe(true);
			expect((await check([long]))[0]?.deliverable).toBe(false);
		}
	});

	it("is deleted by the cron once its address has no entry", async () => {
		await hardBounce(long);
		// The entry goes from D1 alone, as a KV delete that failed would leave it.
		await env.DB.prepare("DELETE FROM suppressions").run();
		await env.DB.prepare("DELETE FROM edge_pending").run();
		await sweep();
		expect((await env.SUPPRESSIONS.list()).keys).toEqual([]);
	});
});

describe("an operator's removal of an unsubscribe holds against older events in any spelling of its domain", () => {
	const remove = async (query: string) => {
		const response = await call(`/v1/suppressions/reader%40example.org${query}`, {
			method: "DELETE",
			headers: { authorization: `Bearer ${tokens.admin}` },
		});
		expect(response.status).toBe(200);
	};
	const at = (timestamp: number, fromDomain: string) =>
		event({ event: "unsubscribe", email: "reader@example.org", fromDomain, timestamp });
	const suppressedFor = async (fromDomain: string) =>
		(
			await lookup(
				"reader@example.org",
				`?fromDomain=${encodeURIComponent(fromDomain)}&consistent=true`,
			)
		).suppressed;

	it.each([
		[
			"a trailing dot",
			"news.example.com",
			"?list=unsubscribe&scope=news.example.com",
			"News.Example.com.",
		],
		[
			"punycode after a removal of the stored Unicode",
			"bücher.de",
			"?list=unsubscribe&scope=bücher.de",
			"XN--BCHER-KVA.DE",
		],
		[
			"Unicode after a removal named in punycode",
			"xn--bcher-kva.de",
			"?list=unsubscribe&scope=xn--bcher-kva.de",
			"bücher.de",
		],
		[
			"the plain domain after a removal of every entry",
			"news.example.com.",
			"",
			"news.example.com",
		],
	])("%s", async (_, stored, query, late) => {
		await at(1_700_000_000, stored);
		await remove(query.replace("bücher", encodeURIComponent("bücher")));
		// Sent before the removal, arriving after it, its domain spelt another way.
		await at(1_600_000_000, late);
		expect(await suppressedFor(late)).toBe(false);
		expect(await suppressedFor(stored)).toBe(false);
		expect(await entriesOf("reader@example.org")).toEqual([]);
		// One sent after the removal suppresses again, in whichever spelling.
		await at(Math.floor(Date.now() / 1000) + 60, late);
		expect(await suppressedFor(stored)).toBe(true);
	});

	it("holds when no entry existed yet and the event names the domain another way", async () => {
		await remove(`?list=unsubscribe&scope=${encodeURIComponent("bücher.de")}`);
		await at(1_600_000_000, "xn--bcher-kva.de");
		expect(await suppressedFor("bücher.de")).toBe(false);
		// Another domain is not held back.
		await at(1_600_000_000, "shop.example.com");
		expect(await suppressedFor("shop.example.com")).toBe(true);
	});
});

describe("one address however spelt, on every path that names it", () => {
	const stored = "réader@example.org";
	// Another case, NFD, white space around: the same person.
	const spelt = ` RÉADER@EXAMPLE.ORG\t`.normalize("NFD");
	const path = encodeURIComponent(spelt);
	const as = (token: string, init: RequestInit = {}) => ({
		...init,
		headers: { authorization: `Bearer ${token}`, ...init.headers },
	});

	it("history, the events filter, an import, a removal and an erasure", async () => {
		await hardBounce("Réader@Example.org".normalize("NFD"));
		const history = await call(`/v1/suppressions/${path}/history`, as(tokens.lookup));
		expect(await history.json()).toMatchObject({
			email: stored,
			history: [{ action: "added", list: "bounce" }],
		});
		const events = await call(`/v1/events?email=${path}`, as(tokens.lookup));
		expect(((await events.json()) as { events: unknown[] }).events).toHaveLength(1);

		const imported = await call(
			"/v1/suppressions/import",
			as(tokens.admin, {
				method: "POST",
				headers: { "content-type": "application/x-ndjson" },
				body: `${JSON.stringify({ email: spelt, list: "manual", scope: "*" })}\n`,
			}),
		);
		expect(await imported.json()).toEqual({ imported: 1, unchanged: 0, failed: [] });
		const exported = await call("/v1/suppressions/export?format=ndjson", as(tokens.lookup));
		const lines = (await exported.text())
			.trim()
			.split("\n")
			.map((line) => JSON.parse(line));
		expect(lines.map((line) => [line.email, line.list])).toEqual([
			[stored, "bounce"],
			[stored, "manual"],
		]);

		const removed = await call(
			`/v1/suppressions/${path}?list=bounce`,
			as(tokens.admin, { method: "DELETE" }),
		);
		expect(await removed.json()).toEqual({ email: stored, removed: 1 });
		expect((await check([spelt]))[0]).toMatchObject({ normalized: stored, deliverable: false });

		const erased = await call(
			`/v1/addresses/${path}?suppressions=true`,
			as(tokens.admin, { method: "DELETE" }),
		);
		expect(await erased.json()).toEqual({
			email: stored,
			eventsDeleted: 1,
			suppressionsDeleted: 1,
		});
		expect((await lookup(stored)).suppressed).toBe(false);
		expect((await env.SUPPRESSIONS.list()).keys).toEqual([]);
	});

	it("a literal % in a local part is decoded once, and a doubly encoded @ is refused", async () => {
		await hardBounce("q%41@example.com");
		const get = (encoded: string) => call(`/v1/suppressions/${encoded}`, as(tokens.lookup));
		expect(await (await get("q%2541%40example.com")).json()).toMatchObject({
			email: "q%41@example.com",
			suppressed: true,
		});
		// `%41` decoded twice would be `A`: another address, which nothing suppresses.
		expect(await (await get("qa%40example.com")).json()).toMatchObject({ suppressed: false });
		const doubled = await get("q%252541%2540example.com");
		expect(doubled.status).toBe(400);
		expect(await doubled.json()).toMatchObject({ error: { code: "invalid_email" } });
	});
});
