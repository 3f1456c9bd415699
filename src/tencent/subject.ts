// An RFC 2047 encoded-word: =?charset[*language]?B|Q?encoded-text?=
const ENCODED_WORD = /=\?([^?\s*]+)(?:\*[^?\s]*)?\?([BbQq])\?([^?\s]*)\?=/g;

// A line break (CRLF, or a bare LF) followed by white space: a fold.
const FOLD = /\r?\n(?=[ \t])/g;

interface Word {
	charset: string;
	bytes: Uint8Array;
	start: number;
	end: number;
}

/**
 * Decodes the MIME encoded-words (RFC 2047, base64 `B` and quoted-printable `Q`) that Tencent
 * leaves in non-ASCII subjects, after unfolding the subject (a line break before white space is
 * dropped, RFC 5322 2.2.3). Adjacent words of one charset are joined before decoding, since some
 * encoders split a multi-byte character across two words (else decoded one by one, as words of a
 * stateful charset such as ISO-2022-JP must be). When any part cannot be decoded (bad base64, a
 * charset the runtime does not know, bytes invalid in that charset), the subject is returned as
 * received, only unfolded, so nothing is lost.
 *
 * @example
 * decodeSubject("=?UTF-8?B?5rWL6K+V?=") // "测试"
 * decodeSubject("plain subject")        // "plain subject"
 */
export function decodeSubject(received: string): string {
	// A folded header's line breaks are no part of its value (RFC 5322 2.2.3).
	const raw = received.replace(FOLD, "");
	if (!raw.includes("=?")) return raw;
	const words: Word[] = [];
	for (const match of raw.matchAll(ENCODED_WORD)) {
		const [whole, charset = "", encoding = "", text = ""] = match;
		const bytes = encoding.toUpperCase() === "B" ? decodeBase64(text) : decodeQ(text);
		if (bytes === null) return raw;
		const label = charset.toLowerCase();
		words.push({
			...(label === "utf-16" ? utf16Word(bytes) : { charset: label, bytes }),
			start: match.index,
			end: match.index + whole.length,
		});
	}
	if (words.length === 0) return raw;

	let out = "";
	let cursor = 0;
	let i = 0;
	while (i < words.length) {
		const first = words[i] as Word;
		const run = [first];
		// White space between adjacent encoded-words is not part of the text (RFC 2047, 6.2).
		while (i + run.length < words.length) {
			const next = words[i + run.length] as Word;
			const previous = run[run.length - 1] as Word;
			if (next.charset !== first.charset || raw.slice(previous.end, next.start).trim() !== "")
				break;
			run.push(next);
		}
		const text = decodeRun(first.charset, run);
		if (text === null) return raw;
		out += raw.slice(cursor, first.start) + text;
		cursor = (run[run.length - 1] as Word).end;
		i += run.length;
		// A run broken only by a charset change still drops the white space between the words.
		const following = words[i];
		if (following && raw.slice(cursor, following.start).trim() === "") cursor = following.start;
	}
	return out + raw.slice(cursor);
}

/**
 * The text of a run of words in one charset: their bytes joined, so a character split across two
 * words is read whole; else each word on its own, as a stateful charset needs when every word
 * returns to its initial state (ISO-2022-JP words each end in ESC ( B, and the next one's ESC $ B
 * straight after it is an error to the decoder).
 */
function decodeRun(charset: string, run: Word[]): string | null {
	const joined = decodeBytes(charset, concat(run.map((word) => word.bytes)));
	if (joined !== null || run.length === 1) return joined;
	let text = "";
	for (const word of run) {
		const part = decodeBytes(charset, word.bytes);
		if (part === null) return null;
		text += part;
	}
	return text;
}

/**
 * A word in MIME's UTF-16 (RFC 2781 4.3): big-endian unless a byte order mark says otherwise,
 * where the Encoding Standard's "utf-16" is little-endian and would read big-endian text as other
 * characters, without an error, so not even kept as received. Encoders that split a subject
 * (JavaMail) start every word with a mark, which is no part of the text: it is dropped.
 */
function utf16Word(bytes: Uint8Array): Pick<Word, "charset" | "bytes"> {
	if (bytes[0] === 0xff && bytes[1] === 0xfe) {
		return { charset: "utf-16le", bytes: bytes.subarray(2) };
	}
	const marked = bytes[0] === 0xfe && bytes[1] === 0xff;
	return { charset: "utf-16be", bytes: marked ? bytes.subarray(2) : bytes };
}

function decodeBase64(text: string): Uint8Array | null {
	const padded = text.padEnd(Math.ceil(text.length / 4) * 4, "=");
	try {
		return Uint8Array.from(atob(padded), (char) => char.charCodeAt(0));
	} catch {
		return null;
	}
}

function decodeQ(text: string): Uint8Array | null {
	const bytes: number[] = [];
	for (let i = 0; i < text.length; i++) {
		const char = text[i] as string;
		if (char === "_") bytes.push(0x20);
		else if (char === "=") {
			const hex = text.slice(i + 1, i + 3);
			if (!/^[0-9A-Fa-f]{2}$/.test(hex)) return null;
			bytes.push(Number.parseInt(hex, 16));
			i += 2;
		} else {
			const code = char.charCodeAt(0);
			if (code > 0x7e || code < 0x21) return null;
			bytes.push(code);
		}
	}
	return Uint8Array.from(bytes);
}

/**
 * Charset names that mailers write (PHP's mbstring, Windows code pages) and the Encoding Standard,
 * which TextDecoder follows, does not list, mapped to the encoding it reads them with.
 */
const CHARSET_ALIASES: Record<string, string> = {
	cp936: "gbk",
	ms936: "gbk",
	"windows-936": "gbk",
	"euc-cn": "gbk",
	"big-5": "big5",
	cp950: "big5",
	uhc: "euc-kr",
	cp949: "euc-kr",
	cp932: "shift_jis",
	"sjis-win": "shift_jis",
};

function decodeBytes(charset: string, bytes: Uint8Array): string | null {
	try {
		const label = Object.hasOwn(CHARSET_ALIASES, charset) ? CHARSET_ALIASES[charset] : charset;
		return new TextDecoder(label, { fatal: true, ignoreBOM: false }).decode(bytes);
	} catch {
		// RangeError for a charset the runtime does not support, TypeError for invalid bytes.
		return null;
	}
}

function concat(parts: Uint8Array[]): Uint8Array {
	const out = new Uint8Array(parts.reduce((sum, part) => sum + part.length, 0));
	let offset = 0;
	for (const part of parts) {
		out.set(part, offset);
		offset += part.length;
	}
	return out;
}
