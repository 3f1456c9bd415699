import * as z from "zod/mini";
import { readBody } from "../body";
import { repairKeys } from "../cron/edge-repair";
import { KV_OPERATIONS_PER_RUN } from "../cron/reconcile";
import { ApiError, json } from "../errors";
import { isoTime } from "../events/event";
import { log } from "../log";
import { parseQuery, type RawQuery } from "../query";
import { listEntries } from "./api-store";
import { CSV_HEADER, formatCsvRow } from "./csv";
import { EDGE_SYNC_AT_ONCE, markIfOvertaken, markLagging } from "./edge";
import { renderEntry, type StoredEntry } from "./entry";
import { listField, scopeField } from "./fields";
import { readImport } from "./import-lines";
import { importEntries } from "./transfer-store";

interface RouteRequest extends Request {
	query: RawQuery;
	requestId: string;
}

/** Query of `GET /v1/suppressions/export`. */
export const exportQuery = z.strictObject({
	format: z._default(z.enum(["csv", "ndjson"], { error: "must be csv or ndjson" }), "csv"),
	list: z.optional(listField),
	scope: z.optional(scopeField),
});

const PAGE = 1000;

function csvLine(entry: StoredEntry): string {
	const json = renderEntry(entry);
	return formatCsvRow([
		entry.email,
		json.list,
		json.scope,
		json.reason,
		json.source,
		json.createdAt,
		json.updatedAt,
		json.expiresAt,
	]);
}

function ndjsonLine(entry: StoredEntry): string {
	return `${JSON.stringify({ email: entry.email, ...renderEntry(entry) })}\n`;
}

/**
 * `GET /v1/suppressions/export`: every live entry, streamed a page of 1000 at a time, so an export
 * of a million entries never holds them all in memory.
 */
export async function exportRoute(request: RouteRequest, env: Env): Promise<Response> {
	const { format, ...filters } = parseQuery(exportQuery, request.query);
	const now = Math.floor(Date.now() / 1000);
	const encoder = new TextEncoder();
	const line = format === "csv" ? csvLine : ndjsonLine;
	let cursor: Parameters<typeof listEntries>[4];
	let started = false;
	// The first page is read before the answer, so that storage failing at the start answers 500
	// instead of a 200 whose body breaks off. HEAD answers the headers alone: no stream, so no
	// page is read for a body nobody gets.
	let first =
		request.method === "HEAD" ? undefined : await listEntries(env.DB, filters, PAGE, now, cursor);
	const body =
		request.method === "HEAD"
			? null
			: new ReadableStream<Uint8Array>({
					async pull(controller) {
						try {
							if (!started && format === "csv")
								controller.enqueue(encoder.encode(formatCsvRow(CSV_HEADER)));
							started = true;
							const page = first ?? (await listEntries(env.DB, filters, PAGE, now, cursor));
							first = undefined;
							controller.enqueue(encoder.encode(page.entries.map(line).join("")));
							if (page.next) cursor = page.next;
							else controller.close();
						} catch (error) {
							log("error", "export failed", { requestId: request.requestId, error: String(error) });
							controller.error(error);
						}
					},
				});
	const type = format === "csv" ? "text/csv; charset=utf-8" : "application/x-ndjson; charset=utf-8";
	return new Response(body, {
		headers: {
			"content-type": type,
			"content-disposition": `attachment; filename="suppressions-${isoTime(now).slice(0, 10)}.${format}"`,
		},
	});
}

const MAX_IMPORT_BYTES = 8 * 1024 * 1024;

/**
 * `POST /v1/suppressions/import`: the export's CSV (`text/csv`) or NDJSON
 * (`application/x-ndjson`), at most 10,000 lines. Idempotent; a bad line fails alone, with its
 * number and the reason, and the others are imported.
 */
export async function importRoute(
	request: RouteRequest,
	env: Env,
	ctx: ExecutionContext,
): Promise<Response> {
	const type = (request.headers.get("content-type") ?? "").split(";")[0]?.trim().toLowerCase();
	const format =
		type === "text/csv"
			? "csv"
			: type === "application/x-ndjson" || type === "application/ndjson"
				? "ndjson"
				: null;
	if (!format) {
		throw new ApiError(415, "unsupported_media_type", "Send text/csv or application/x-ndjson");
	}
	const body = await readBody(request, MAX_IMPORT_BYTES);
	if (body.tooLarge)
		throw new ApiError(413, "payload_too_large", `The body exceeds ${MAX_IMPORT_BYTES} bytes`);
	const now = Math.floor(Date.now() / 1000);
	const { entries, failed } = readImport(body.bytes, format, now);
	const { changed, queued } = await importEntries(env.DB, entries, now);
	// The changed addresses, then those of unchanged lines still queued: this may repeat an import
	// that D1 committed without answering (its `Network connection lost.`), which wrote no key, and
	// until the cron's next run KV would call those addresses deliverable.
	const addresses = [...new Set([...changed, ...queued])];
	// The first EDGE_SYNC_AT_ONCE of these addresses go to KV at once; every one stays queued, and
	// the cron checks them all once these writes have landed (KV failing, or more addresses). Until
	// it has written the others, lookups read D1 for what KV would call deliverable: marked before
	// the answer, so that this isolate sees the mark at once, and others in this location usually
	// do (KV makes a write visible where it was made usually at once, not always).
	if (addresses.length > EDGE_SYNC_AT_ONCE) await markLagging(env, now, request.requestId);
	ctx.waitUntil(
		repairKeys(env, addresses.slice(0, EDGE_SYNC_AT_ONCE), now, { left: KV_OPERATIONS_PER_RUN })
			.then(async ({ failed, error, written }) => {
				if (failed.length > 0) {
					log("warn", "edge write failed", {
						requestId: request.requestId,
						failed: failed.length,
						error,
					});
					await markLagging(env, now, request.requestId);
				}
				// Marked already when it left addresses to the cron.
				else if (addresses.length <= EDGE_SYNC_AT_ONCE)
					await markIfOvertaken(env, written, now, request.requestId);
			})
			.catch(async (error: unknown) => {
				log("warn", "import edge sync failed", {
					requestId: request.requestId,
					error: String(error),
				});
				await markLagging(env, now, request.requestId);
			}),
	);
	return json({ imported: changed.length, unchanged: entries.length - changed.length, failed });
}
