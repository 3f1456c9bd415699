import * as z from "zod/mini";
import { readJson } from "../body";
import { mailboxProblem, normalizeEmail } from "../email";
import { json } from "../errors";
import { log } from "../log";
import {
	decodeCursor,
	encodeCursor,
	limitParam,
	parseQuery,
	type RawQuery,
	timeParam,
} from "../query";
import { domainParam, emailFromPath, parseBody } from "../validate";
import { type EntryCursor, listEntries } from "./api-store";
import { edgeKey, KV_BATCH, parseEdgeValue, plainEdgeKey } from "./edge-format";
import { edgeLagging } from "./edge-lag";
import { type EntryJson, lookupResult, renderEntry } from "./entry";
import { listField, scopeField } from "./fields";
import { type EntryScope, readEntries, readEntryScopes } from "./store";

interface RouteRequest {
	params: Record<string, string | undefined>;
	query: RawQuery;
	requestId: string;
}

const now = (): number => Math.floor(Date.now() / 1000);

/** The sender of a lookup or a check, compared with entries' scopes as a domain name. */
const senderDomain = z.optional(
	domainParam.check(
		z.describe(
			"The sending domain: entries for it or for every sender count. Compared as domain names: case, one trailing dot and an IDN's Unicode or punycode (xn--) spelling do not matter",
		),
	),
);

export const lookupQuery = z.strictObject({
	fromDomain: senderDomain,
	consistent: z._default(z.enum(["true", "false"], { error: "must be true or false" }), "false"),
});

/** Live entries of addresses from D1, rendered. */
async function entriesFromD1(
	env: Env,
	emails: string[],
	at: number,
): Promise<Map<string, EntryJson[]>> {
	const stored = await readEntries(env.DB, emails, at);
	return new Map([...stored].map(([email, entries]) => [email, entries.map(renderEntry)]));
}

/**
 * `GET /v1/suppressions/{email}`: one KV read at the edge; `consistent=true` reads D1, and so
 * does a lookup whose KV read fails, or that KV would answer "not suppressed" while KV lags
 * (edge-lag.ts): its key may be missing, or older than D1's entries.
 */
export async function lookupRoute(request: RouteRequest, env: Env): Promise<Response> {
	const email = emailFromPath(request.params.email);
	const query = parseQuery(lookupQuery, request.query);
	const at = now();
	if (query.consistent !== "true") {
		try {
			const text = await env.SUPPRESSIONS.get(await edgeKey(email), "text");
			// No key: no entries. A value that is not entries (the D1 marker) leaves it to D1, below.
			const entries = text === null ? [] : parseEdgeValue(text);
			if (entries) {
				const result = lookupResult(email, entries, at, query.fromDomain);
				if (result.suppressed || !(await edgeLagging(env.SUPPRESSIONS, at))) return json(result);
			}
		} catch (error) {
			log("warn", "edge read failed, reading D1", {
				requestId: request.requestId,
				error: String(error),
			});
		}
	}
	const entries = (await entriesFromD1(env, [email], at)).get(email) ?? [];
	return json(lookupResult(email, entries, at, query.fromDomain));
}

const MAX_CHECK = 1000;
export const checkBody = z.strictObject({
	emails: z
		.array(z.string({ error: "must be a string" }), {
			error: `must be an array of 1 to ${MAX_CHECK} addresses`,
		})
		.check(
			z.minLength(1, { error: "must hold at least one address" }),
			z.maxLength(MAX_CHECK, { error: `must hold at most ${MAX_CHECK} addresses` }),
		),
	fromDomain: senderDomain,
});

/** What the check answers for an address. */
interface Decision {
	suppressed: boolean;
	lists: string[];
}

/**
 * Decides many addresses from KV: bulk gets of 100 keys in parallel, D1 for any batch that fails,
 * for addresses whose value is not their entries (too large for KV, or unreadable), and, while KV
 * lags behind D1 (edge-lag.ts), for those KV would call deliverable, in one query. Each batch
 * is decided as it arrives and only the decisions are kept: an address may have many entries (one
 * per sender domain it unsubscribed from). The values of 1,000 keys take at most 25 MiB
 * (`MAX_EDGE_VALUE_BYTES`); from D1 only the list, scope and expiry of each entry are read.
 */
async function decideMany(
	env: Env,
	emails: string[],
	at: number,
	fromDomain: string | undefined,
	requestId: string,
): Promise<Map<string, Decision>> {
	const decided = new Map<string, Decision>();
	const decide = (email: string, entries: readonly EntryScope[]) => {
		const found = lookupResult(email, entries, at, fromDomain);
		decided.set(email, {
			suppressed: found.suppressed,
			lists: [...new Set(found.entries.map((entry) => entry.list))],
		});
	};
	const batches: string[][] = [];
	for (let i = 0; i < emails.length; i += KV_BATCH) batches.push(emails.slice(i, i + KV_BATCH));
	// Read beside the bulk gets, when this isolate's memo of it is stale.
	const lagging = edgeLagging(env.SUPPRESSIONS, at);
	// Addresses already decided from D1 (a failed batch, the marker), which the lag leaves alone.
	const fromD1 = new Set<string>();
	await Promise.all(
		batches.map(async (batch) => {
			let inD1: string[] = [];
			try {
				const plain = batch.map(plainEdgeKey);
				const keys = plain.every((key): key is string => key !== null)
					? plain
					: await Promise.all(batch.map(edgeKey));
				const values = await env.SUPPRESSIONS.get(keys, "text");
				batch.forEach((email, i) => {
					const text = values.get(keys[i] as string);
					// An address without a key (nearly all of a list) is left out: no entries.
					if (text === null || text === undefined) return;
					const entries = parseEdgeValue(text);
					if (entries) decide(email, entries);
					else inD1.push(email);
				});
			} catch (error) {
				log("warn", "edge bulk read failed, reading D1", { requestId, error: String(error) });
				inD1 = batch;
			}
			if (inD1.length === 0) return;
			const stored = await readEntryScopes(env.DB, inD1, at);
			for (const email of inD1) {
				decide(email, stored.get(email) ?? []);
				fromD1.add(email);
			}
		}),
	);
	if (!(await lagging)) return decided;
	const deliverable = emails.filter(
		(email) => !fromD1.has(email) && !decided.get(email)?.suppressed,
	);
	if (deliverable.length > 0) {
		const stored = await readEntryScopes(env.DB, deliverable, at);
		for (const email of deliverable) decide(email, stored.get(email) ?? []);
	}
	return decided;
}

/**
 * Largest check body: 1000 addresses of the longest kind (254 characters), each character
 * escaped as `\uXXXX` (six bytes, as Python's json.dumps writes anything beyond ASCII), fit.
 */
const MAX_CHECK_BYTES = 2 * 1024 * 1024;

/** `POST /v1/suppressions/check`: the pre-send check of a whole recipient list. */
export async function checkRoute(request: RouteRequest & Request, env: Env): Promise<Response> {
	const body = parseBody(checkBody, await readJson(request, MAX_CHECK_BYTES));
	const at = now();
	const unique = new Set<string>();
	const items = body.emails.map((email) => {
		const normalized = normalizeEmail(email);
		const invalid = mailboxProblem(normalized) !== null;
		if (!invalid) unique.add(normalized);
		return { email, normalized, invalid };
	});
	// Each address is decided once, however often the list repeats it: its entries may be many
	// (one per sender domain it unsubscribed from), and deciding them again for each of a
	// thousand copies of it cost most of a second.
	const decided = await decideMany(env, [...unique], at, body.fromDomain, request.requestId);
	const counts = { deliverableCount: 0, suppressedCount: 0, invalidCount: 0 };
	const results = items.map((item) => {
		if (item.invalid) {
			counts.invalidCount++;
			return { email: item.email, normalized: item.normalized, invalid: true, deliverable: false };
		}
		const found = decided.get(item.normalized) ?? { suppressed: false, lists: [] };
		if (found.suppressed) counts.suppressedCount++;
		else counts.deliverableCount++;
		return {
			email: item.email,
			normalized: item.normalized,
			deliverable: !found.suppressed,
			suppressed: found.suppressed,
			lists: found.lists,
		};
	});
	return json({ results, ...counts });
}

const cursorParam = z.pipe(
	z.string(),
	z.transform((raw, ctx): EntryCursor => {
		const parts = decodeCursor(raw);
		if (parts?.length !== 4 || !parts.every((part) => typeof part === "string")) {
			ctx.issues.push({ code: "custom", input: raw, message: "is not a cursor this API issued" });
			return z.NEVER;
		}
		return parts as EntryCursor;
	}),
);

export const listQuery = z.strictObject({
	list: z.optional(listField),
	scope: z.optional(scopeField),
	since: z.optional(timeParam),
	cursor: z.optional(cursorParam),
	limit: limitParam,
});

/** `GET /v1/suppressions`: live entries in address order, filtered and paged. */
export async function listRoute(request: RouteRequest, env: Env): Promise<Response> {
	const { cursor, limit, ...filters } = parseQuery(listQuery, request.query);
	const page = await listEntries(env.DB, filters, limit, now(), cursor);
	return json({
		entries: page.entries.map((entry) => ({ email: entry.email, ...renderEntry(entry) })),
		cursor: page.next ? encodeCursor(page.next) : null,
	});
}
