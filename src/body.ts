import { ApiError } from "./errors";
import { parseUniqueJson } from "./json";

/** The raw bytes of a request body, read up to a limit. */
export interface RawBody {
	bytes: Uint8Array;
	/** Bytes seen; past the limit, reading stops, so this is a lower bound. */
	size: number;
	tooLarge: boolean;
}

/**
 * Reads at most `maxBytes` of the body (a little more to tell that it is larger), so an oversized
 * request costs no more memory than the limit.
 */
export async function readBody(request: Request, maxBytes: number): Promise<RawBody> {
	const declared = Number(request.headers.get("content-length") ?? Number.NaN);
	if (Number.isFinite(declared) && declared <= maxBytes) {
		// The runtime holds the body to its declared length, so one read suffices (none without a
		// body). Not touching `request.body` spares the runtime a stream object.
		const bytes = new Uint8Array(await request.arrayBuffer());
		return { bytes, size: bytes.byteLength, tooLarge: bytes.byteLength > maxBytes };
	}
	const chunks: Uint8Array[] = [];
	let size = 0;
	if (request.body) {
		const reader = request.body.getReader();
		while (size <= maxBytes) {
			const { done, value } = await reader.read();
			if (done) break;
			chunks.push(value);
			size += value.byteLength;
		}
		if (size > maxBytes) await reader.cancel();
	}
	const bytes = new Uint8Array(size);
	let offset = 0;
	for (const chunk of chunks) {
		bytes.set(chunk, offset);
		offset += chunk.byteLength;
	}
	const tooLarge = size > maxBytes || (Number.isFinite(declared) && declared > maxBytes);
	return { bytes, size: Math.max(size, Number.isFinite(declared) ? declared : 0), tooLarge };
}

// Decoding without `stream` leaves no state behind, so one decoder serves every request.
const strictUtf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: false });

/**
 * Parses bytes as JSON in strict UTF-8 with `parse`. `request.json()` would silently replace
 * invalid bytes with U+FFFD and so change what Tencent sent. A callback passes
 * {@link parseCallbackJson}, which also keeps numbers a double cannot hold and refuses a member
 * named twice in one object; an API body passes {@link parseUniqueJson}.
 *
 * @throws ApiError 400 `invalid_json`
 */
export function parseJsonBytes(bytes: Uint8Array, parse: (text: string) => unknown): unknown {
	let text: string;
	try {
		text = strictUtf8.decode(bytes);
	} catch {
		throw new ApiError(400, "invalid_json", "The body is not valid UTF-8");
	}
	if (text.trim() === "") throw new ApiError(400, "invalid_json", "The body is empty");
	try {
		return parse(text);
	} catch (error) {
		const detail = error instanceof SyntaxError ? `: ${error.message}` : "";
		throw new ApiError(400, "invalid_json", `The body is not valid JSON${detail}`);
	}
}

/**
 * Reads a JSON request body of at most `maxBytes` for the API routes, refusing an object that
 * names a member twice. A route whose body fields are all optional passes `whenEmpty`, the value
 * that no body at all stands for.
 *
 * @throws ApiError 413 `payload_too_large`, 400 `invalid_json`
 */
export async function readJson(
	request: Request,
	maxBytes: number,
	whenEmpty?: unknown,
): Promise<unknown> {
	const body = await readBody(request, maxBytes);
	if (body.tooLarge) {
		throw new ApiError(413, "payload_too_large", `The body exceeds ${maxBytes} bytes`);
	}
	if (whenEmpty !== undefined && body.bytes.byteLength === 0) return whenEmpty;
	return parseJsonBytes(body.bytes, parseUniqueJson);
}
