import { log } from "./log";

/** One problem with a field of a request, as the contract's `issues` array shows it. */
export interface Issue {
	path: string;
	message: string;
	/** Position of the event in a request that held several. */
	index?: number;
}

/**
 * An expected failure with a message that is safe to show to the caller.
 *
 * @example
 * throw new ApiError(400, "invalid_email", "The address is not a plausible email address");
 */
export class ApiError extends Error {
	/** The first {@link MAX_ISSUES} problems: an answer stays small whatever the request. */
	readonly issues?: Issue[];

	constructor(
		readonly status: number,
		readonly code: string,
		message: string,
		issues?: Issue[],
		readonly headers?: HeadersInit,
	) {
		super(message);
		this.name = "ApiError";
		if (issues) this.issues = issues.slice(0, MAX_ISSUES);
	}
}

/** The most issues an error answer lists. */
export const MAX_ISSUES = 100;

const JSON_TYPE = "application/json; charset=utf-8";

/** A JSON response with the contract's content type. */
export function json(body: unknown, status = 200, headers?: HeadersInit): Response {
	if (!headers) {
		return new Response(JSON.stringify(body), { status, headers: { "content-type": JSON_TYPE } });
	}
	const response = new Response(JSON.stringify(body), { status, headers });
	response.headers.set("content-type", JSON_TYPE);
	return response;
}

/** The contract's error body for an {@link ApiError}. */
function renderError(error: ApiError): Response {
	const body = {
		error: {
			code: error.code,
			message: error.message,
			...(error.issues ? { issues: error.issues } : {}),
		},
	};
	return json(body, error.status, error.headers);
}

/**
 * The one place where a thrown value becomes a response: expected errors show themselves,
 * anything else is logged with its details and answered with a generic 500.
 */
export function errorToResponse(error: unknown, requestId: string): Response {
	if (error instanceof ApiError) return renderError(error);
	log("error", "unhandled error", {
		requestId,
		error: error instanceof Error ? error.message : String(error),
		stack: error instanceof Error ? error.stack : undefined,
	});
	return renderError(new ApiError(500, "internal", "Internal error"));
}

/** 404 in the contract's shape; a wrong callback token answers exactly this too. */
export function notFound(): ApiError {
	return new ApiError(404, "not_found", "No such resource");
}
