import * as z from "zod/mini";
import { parseJsonBytes } from "../body";
import { loadSettings } from "../config";
import { ApiError, json, notFound } from "../errors";
import { parseCallbackJson } from "../json";
import { log } from "../log";
import { decodeCursor, encodeCursor, limitParam, parseQuery, type RawQuery } from "../query";
import { parseCallback } from "../tencent/normalise";
import { isoTime } from "./event";
import { type StoredCallback, storageUnavailable, storeCallback, syncCallbackEdge } from "./ingest";
import { listRejected, markReplayed, type RejectedRow, readRejected } from "./rejected-store";

interface RouteRequest {
	params: Record<string, string | undefined>;
	query: RawQuery;
	requestId: string;
}

const cursorParam = z.pipe(
	z.string(),
	z.transform((raw, ctx) => {
		const [receivedAt, id, ...rest] = decodeCursor(raw) ?? [];
		if (rest.length > 0 || !Number.isSafeInteger(receivedAt) || typeof id !== "string") {
			ctx.issues.push({ code: "custom", input: raw, message: "is not a cursor this API issued" });
			return z.NEVER;
		}
		return { receivedAt: Number(receivedAt), id };
	}),
);

/** Query of `GET /v1/rejected`. */
export const rejectedQuery = z.strictObject({ cursor: z.optional(cursorParam), limit: limitParam });

/**
 * The body as text when it is valid UTF-8, else base64, so any bytes can be shown and copied. A
 * body kept only in part was cut at a byte count, which splits a character of two to four bytes
 * more often than not: its text ends before that character (a shorter prefix of what was sent)
 * rather than the whole body turning to base64.
 */
function renderBody(
	bytes: Uint8Array,
	truncated: boolean,
): { body: string; bodyEncoding: "utf-8" | "base64" } {
	try {
		return {
			// Streaming leaves an incomplete last character undecoded; invalid bytes still throw.
			body: new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(bytes, {
				stream: truncated,
			}),
			bodyEncoding: "utf-8",
		};
	} catch {
		return {
			body: btoa(Array.from(bytes, (byte) => String.fromCharCode(byte)).join("")),
			bodyEncoding: "base64",
		};
	}
}

function renderRejected(row: RejectedRow) {
	const bytes = Uint8Array.from(row.body);
	const truncated = row.bodyBytes > bytes.length;
	return {
		id: row.id,
		receivedAt: isoTime(row.receivedAt),
		status: row.status,
		code: row.code,
		message: row.message,
		issues: row.issues ? (JSON.parse(row.issues) as unknown) : null,
		contentType: row.contentType,
		bodyBytes: row.bodyBytes,
		truncated,
		...renderBody(bytes, truncated),
		replayedAt: row.replayedAt === null ? null : isoTime(row.replayedAt),
		replayStored: row.replayStored,
	};
}

/** `GET /v1/rejected`: refused callbacks, newest first, with their raw bodies. */
export async function rejectedListRoute(request: RouteRequest, env: Env): Promise<Response> {
	const { cursor, limit } = parseQuery(rejectedQuery, request.query);
	const page = await listRejected(env.DB, limit, cursor);
	return json({
		rejected: page.rows.map(renderRejected),
		cursor: page.next ? encodeCursor([page.next.receivedAt, page.next.id]) : null,
	});
}

/**
 * `POST /v1/rejected/{id}/replay`: runs the stored body through today's validation and, when it
 * passes, stores it as if it had just arrived (duplicates count as such). A body cut at 64 KiB
 * cannot be replayed (409); one that still fails answers 422 with its issues.
 */
export async function replayRoute(
	request: RouteRequest,
	env: Env,
	ctx: ExecutionContext,
): Promise<Response> {
	const row = await readRejected(env.DB, request.params.id ?? "");
	if (!row) throw notFound();
	const bytes = Uint8Array.from(row.body);
	if (row.bodyBytes > bytes.length) {
		throw new ApiError(409, "not_replayable", "Only the first 64 KiB of this body were kept");
	}
	const settings = loadSettings(env);
	const now = Math.floor(Date.now() / 1000);
	let events: Awaited<ReturnType<typeof parseCallback>>;
	try {
		events = await parseCallback(
			parseJsonBytes(bytes, parseCallbackJson),
			settings.maxEventsPerRequest,
			now,
		);
	} catch (error) {
		if (!(error instanceof ApiError)) throw error;
		throw new ApiError(
			422,
			"still_invalid",
			`The body still fails validation: ${error.message}`,
			error.issues,
		);
	}
	let result: StoredCallback;
	try {
		result = await storeCallback(env.DB, events, settings.policy, now, request.requestId, [
			markReplayed(
				env.DB,
				row.id,
				now,
				events.map((event) => event.id),
			),
		]);
	} catch (error) {
		log("error", "replay not stored", { requestId: request.requestId, error: String(error) });
		throw storageUnavailable();
	}
	const { stored, changed, resent } = result;
	if (changed.size > 0 || resent.length > 0) {
		ctx.waitUntil(syncCallbackEdge(env, result, now, request.requestId));
	}
	return json({
		ok: true,
		id: row.id,
		received: events.length,
		stored,
		duplicates: events.length - stored,
	});
}
