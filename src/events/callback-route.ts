import { matchesToken } from "../auth";
import { parseJsonBytes, readBody } from "../body";
import { loadSettings, requireTokens } from "../config";
import { ApiError, json, notFound } from "../errors";
import { parseCallbackJson } from "../json";
import { log } from "../log";
import { parseCallback } from "../tencent/normalise";
import { type StoredCallback, storageUnavailable, storeCallback, syncCallbackEdge } from "./ingest";
import { recordRejected } from "./rejected-store";

/** Largest callback body accepted. */
const MAX_CALLBACK_BYTES = 256 * 1024;

interface CallbackRequest extends Request {
	params: Record<string, string | undefined>;
	requestId: string;
	logFields?: Record<string, unknown>;
}

/** 404 unless `token` is one of `CALLBACK_TOKENS`; 503 when none is set. */
async function checkCallbackToken(env: Env, token: string | undefined): Promise<void> {
	const tokens = requireTokens(loadSettings(env).callbackTokens, "CALLBACK_TOKENS");
	if (!(await matchesToken(decodeToken(token ?? ""), tokens))) throw notFound();
}

/**
 * The path segment as the token it names: `%7E` and `~` are the same URL (RFC 3986), and some
 * URL encoders escape `~`. A malformed escape names no token.
 */
function decodeToken(segment: string): string {
	if (!segment.includes("%")) return segment;
	try {
		return decodeURIComponent(segment);
	} catch {
		return "";
	}
}

/** `GET|HEAD /v1/callbacks/tencent/{token}`: a reachability probe for the console. */
export async function probeCallback(request: CallbackRequest, env: Env): Promise<Response> {
	await checkCallbackToken(env, request.params.token);
	return json({ ok: true });
}

/**
 * `POST /v1/callbacks/tencent/{token}`: validates every event of the request and stores them in
 * one D1 batch, answering 200 only after the batch commits. A refused body is recorded.
 */
export async function receiveCallback(
	request: CallbackRequest,
	env: Env,
	ctx: ExecutionContext,
): Promise<Response> {
	await checkCallbackToken(env, request.params.token);
	const settings = loadSettings(env);
	const receivedAt = Math.floor(Date.now() / 1000);
	const body = await readBody(request, MAX_CALLBACK_BYTES);
	let events: Awaited<ReturnType<typeof parseCallback>>;
	try {
		if (body.tooLarge) {
			throw new ApiError(413, "payload_too_large", `The body exceeds ${MAX_CALLBACK_BYTES} bytes`);
		}
		events = await parseCallback(
			parseJsonBytes(body.bytes, parseCallbackJson),
			settings.maxEventsPerRequest,
			receivedAt,
		);
	} catch (error) {
		// A refusal that cannot be recorded is answered as a storage failure: Tencent then retries
		// the body instead of losing it.
		if (
			error instanceof ApiError &&
			!(await recordRefusal(env.DB, request, receivedAt, error, body, settings.maxRejectedBytes))
		) {
			throw storageUnavailable();
		}
		throw error;
	}

	let result: StoredCallback;
	try {
		result = await storeCallback(env.DB, events, settings.policy, receivedAt, request.requestId);
	} catch (error) {
		log("error", "callback not stored", { requestId: request.requestId, error: String(error) });
		throw storageUnavailable();
	}
	const { stored, changed, resent } = result;
	// The KV copy follows the D1 commit; a failure there is repaired by the reconcile cron.
	if (changed.size > 0 || resent.length > 0) {
		ctx.waitUntil(syncCallbackEdge(env, result, receivedAt, request.requestId));
	}
	const duplicates = events.length - stored;
	// A callback that only stored new events is routine and not logged; redeliveries and
	// suppression changes are worth a line.
	if (duplicates > 0 || changed.size > 0) {
		request.logFields = { received: events.length, stored, duplicates, changed: changed.size };
	}
	return json({ ok: true, received: events.length, stored, duplicates });
}

/**
 * Records a refused body; false, with the reason logged, when D1 did not take the record or
 * refused callbacks already take `maxBytes`.
 */
async function recordRefusal(
	db: D1Database,
	request: CallbackRequest,
	receivedAt: number,
	error: ApiError,
	body: Awaited<ReturnType<typeof readBody>>,
	maxBytes: number,
): Promise<boolean> {
	let id: string | null;
	try {
		id = await recordRejected(
			db,
			{
				receivedAt,
				error,
				contentType: request.headers.get("content-type"),
				body: body.bytes,
				bodyBytes: body.size,
			},
			maxBytes,
		);
	} catch (failure) {
		log("error", "rejected callback not recorded", {
			requestId: request.requestId,
			code: error.code,
			error: String(failure),
		});
		return false;
	}
	if (id === null) {
		log("error", "rejected callback not recorded: refused callbacks fill MAX_REJECTED_MIB", {
			requestId: request.requestId,
			code: error.code,
		});
		return false;
	}
	request.logFields = { rejectedId: id, code: error.code };
	return true;
}
