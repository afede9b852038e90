/**
 * An upper estimate of the tokens a text costs with OpenAI's o200k_base encoding (the gpt-4o
 * family), without a tokenizer: a real one costs ~200 ms and ~60 MiB on its first use in an
 * instance (gpt-tokenizer 4.0.0; js-tiktoken ~750 ms and ~165 MiB), which a cold start would pay
 * for one budget check. The estimate follows o200k's pre-tokenizer, whose pieces BPE never merges
 * across: words (a lower-to-upper case change starts a new one), runs of at most 3 digits,
 * punctuation runs, whitespace, and prices each piece from what it holds.
 *
 * Measured against gpt-tokenizer 4.0.0 (o200k_base) on test/fixtures/o200k-corpus.json (54 texts:
 * English prose, chat, code, JSON, numbers, IDs, URLs, 11 other scripts, emoji, whitespace and
 * repeated characters, symbols, random letters), estimate / true tokens: min 1.00, median 1.29,
 * max 2.75 (long runs of one repeated character, which o200k packs tightly); English prose 1.19
 * to 1.38 (1.95 for a line of very long words); code and JSON 1.04 to 1.42. Never below the true
 * count on that corpus: ESTIMATE_MARGIN is 1. On texts not used to fit the prices: package
 * READMEs in 600-character slices 0.1% under (min 0.78, median 1.33), TypeScript 0% (median 1.38),
 * random base64, hex and UUIDs 0.5 to 2.5% under (min 0.71). Random lowercase letters with
 * vowels ("qviwbe") are the known blind spot: 28% under, min 0.29; telling them from English
 * would take a bigram table. The session's calibration (below) corrects a steady bias like that.
 */

/** On the calibration corpus, true tokens <= estimate * ESTIMATE_MARGIN for every text. */
export const ESTIMATE_MARGIN = 1;
/** On the calibration corpus, estimate <= true tokens * MAX_OVERCOUNT for every text (long runs of one repeated mark). */
export const MAX_OVERCOUNT = 2.75;

/** OpenAI's chat format: <|im_start|>, the role, <|im_sep|> and <|im_end|> around each message. */
export const TOKENS_PER_MESSAGE = 4;
/** The reply's own <|im_start|>assistant<|im_sep|>, which every request pays. */
export const REPLY_PRIMING_TOKENS = 3;
/**
 * The most `estimateTokens` prices one UTF-16 code unit (a rare symbol such as "∑" at 2; an astral
 * code point at 3 for its 2 units): a text of n units is estimated at most 2n, plus a token for a
 * run left open at its end. Tested against arbitrary text.
 */
export const MAX_TOKENS_PER_CHAR = 2;

/** Tokens of a whole prompt: every message's content plus the chat format around it. */
export function estimatePromptTokens(messages: readonly { readonly role: string; readonly content: string }[]): number {
  let tokens = REPLY_PRIMING_TOKENS;
  for (const message of messages) tokens += estimateMessageTokens(message.content);
  return tokens;
}

/** Texts sent with every message of a session (system prompts, summaries): few, estimated once each. */
const recurring = new Map<string, number>();
const MAX_RECURRING = 256;

/** `estimateMessageTokens` of a text that recurs across messages, from a small cache. */
export function estimateRecurring(content: string): number {
  let tokens = recurring.get(content);
  if (tokens === undefined) {
    if (recurring.size >= MAX_RECURRING) recurring.clear();
    tokens = estimateMessageTokens(content);
    recurring.set(content, tokens);
  }
  return tokens;
}

/** One message's share of `estimatePromptTokens`: its content and its format tokens. */
export function estimateMessageTokens(content: string): number {
  return TOKENS_PER_MESSAGE + estimateTokens(content);
}

// The run (pre-tokenizer piece) the scan is in.
const NONE = 0;
const WORD = 1;
const DIGITS = 2;
const SYMBOLS = 3;
const SPACE = 4;

// Prices, in tokens per character, fitted on the corpus (see the file comment).
/** An ASCII letter: English words are mostly one token up to ~8 letters (mean 1.1 at 7, 1.6 at 12). */
const ASCII_LETTER = 1 / 6;
/** Each letter after the 12th of a word: long words, and "hahaha", cost more. */
const LONG_WORD_LETTER = 0.35;
/** The third consonant in a row ("thx", "str"), and each one after it: random letters cost ~1.5 letters a token. */
const THIRD_CONSONANT = 0.6;
const CONSONANT_CLUSTER = 0.8;
/** A punctuation mark that starts a word ("(n", ".log", "\"name"): o200k often has the pair. */
const WORD_PREFIX = 0.5;
/** Accented Latin, Greek, Hebrew, Arabic and the like: 2 bytes in UTF-8. */
const TWO_BYTE_LETTER = 0.5;
/** Cyrillic: o200k has many Russian words whole. */
const CYRILLIC_LETTER = 0.3;
/** Indic and Thai letters: 3 bytes, and o200k has their common syllables. */
const INDIC_LETTER = 0.5;
/** CJK ideographs, kana, Hangul, and letters of scripts priced nowhere else. */
const WIDE_LETTER = 1;
/** A symbol outside ASCII (dashes, quotes, currency, arrows) or a joiner. */
const SYMBOL = 1;
/** Math, sub- and superscripts, technical symbols, dingbats: often two tokens ("∑", "₀", "✈"). */
const RARE_SYMBOL = 2;
/** A combining mark: "e\u0301" is two tokens, and rarer marks two each. */
const COMBINING_MARK = 1.5;
/** The second ASCII punctuation mark of a run, different from the first: o200k has most pairs. */
const SECOND_PUNCTUATION = 0.5;
/** A later one, different from the one before: o200k has fewer triples ("!@#$%" is 1 token per 1.5 marks). */
const NEXT_PUNCTUATION = 0.75;
/** The same ASCII mark again ("----", "!!!"): o200k has long runs of them. */
const REPEATED_PUNCTUATION = 1 / 6;
/** Emoji of the older blocks (faces, flags, skin tones): 1 or 2 tokens each. */
const COMMON_EMOJI = 2;
/** Other code points beyond the BMP (newer emoji, rare ideographs): 4 UTF-8 bytes, 3 tokens seen. */
const ASTRAL = 3;
/** Whitespace up to a line break, per character: 200 newlines are ~14 tokens. */
const LINE_BREAK_RUN = 1 / 12;
/** A space not followed by a line break: 200 spaces are 2 tokens. */
const SPACE_PRICE = 1 / 24;
/** A tab not followed by a line break: 200 tabs are 13 tokens. */
const TAB_PRICE = 1 / 8;

/**
 * The longest start of `text`, in whole code points, whose estimate is at most `tokens` (the
 * estimate never counts low, so the start's true count is within it too).
 */
export function cutToTokens(text: string, tokens: number): string {
  if (estimateTokens(text) <= tokens) return text;
  const points = Array.from(text);
  let [low, high] = [0, points.length];
  while (low < high) {
    const middle = Math.ceil((low + high) / 2);
    if (estimateTokens(points.slice(0, middle).join("")) <= tokens) low = middle;
    else high = middle - 1;
  }
  return points.slice(0, low).join("");
}

/**
 * An upper estimate of the o200k_base tokens of `text`: one pass over its UTF-16 code units,
 * a surrogate pair read as one code point, no allocation.
 */
export function estimateTokens(text: string): number {
  let tokens = 0;
  let run = NONE;
  /** The current run's cost so far, rounded up when the run ends. */
  let cost = 0;
  /** What the last code point added to `cost`, taken back when a word takes it as its prefix. */
  let lastPrice = 0;
  let previous = -1;
  let letters = 0;
  let consonants = 0;
  /** ASCII punctuation marks in the current symbol run. */
  let marks = 0;
  /** Whitespace up to the run's last line break; the spaces and tabs after it, priced. */
  let lineBreakRun = 0;
  let trailing = 0;
  /** The text since the last whitespace: its runs' tokens, code points, and letter/digit or lower/upper switches. */
  let chunk = 0;
  let chunkPoints = 0;
  let switches = 0;

  const closeRun = (absorbsOneSpace: boolean): void => {
    if (run === SPACE) {
      tokens += Math.ceil(lineBreakRun * LINE_BREAK_RUN);
      // A word or punctuation piece takes one leading space (or tab) into itself: " hello" is one token.
      tokens += Math.ceil(absorbsOneSpace ? trailing - lastPrice : trailing);
    } else {
      chunk += Math.ceil(cost);
    }
    cost = 0;
    lastPrice = 0;
    lineBreakRun = 0;
    trailing = 0;
    letters = 0;
    consonants = 0;
    marks = 0;
  };
  const closeChunk = (): void => {
    // Keys, hashes and base64 switch between cases and digits every few characters, and o200k
    // has few of their pieces: they cost up to a token per character, whatever their runs say.
    tokens += switches >= 2 && switches * 4 >= chunkPoints ? Math.max(chunk, chunkPoints) : chunk;
    chunk = 0;
    chunkPoints = 0;
    switches = 0;
  };

  for (let i = 0; i < text.length; i += 1) {
    let c = text.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff && i + 1 < text.length) {
      const low = text.charCodeAt(i + 1);
      if (low >= 0xdc00 && low <= 0xdfff) {
        c = 0x10000 + ((c - 0xd800) << 10) + (low - 0xdc00);
        i += 1;
      }
    }

    if (c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d || c === 0x0b || c === 0x0c) {
      if (run !== SPACE) {
        closeRun(false);
        closeChunk();
        run = SPACE;
      }
      if (c === 0x0a || c === 0x0d) {
        // o200k's piece for line breaks takes the whitespace before them too.
        lineBreakRun += 1 + (trailing > 0 ? 1 : 0);
        trailing = 0;
        lastPrice = 0;
      } else {
        lastPrice = c === 0x09 ? TAB_PRICE : SPACE_PRICE;
        trailing += lastPrice;
      }
      previous = c;
      continue;
    }

    chunkPoints += 1;
    if (isAsciiLetter(c) || (isApostrophe(c) && run === WORD && isAsciiLetter(text.charCodeAt(i + 1)))) {
      const upper = c >= 0x41 && c <= 0x5a;
      const afterLower = previous >= 0x61 && previous <= 0x7a;
      if (run === DIGITS || (upper && afterLower)) switches += 1;
      // o200k starts a word at a lower-to-upper change: "getElementById" is four pieces.
      if (run !== WORD || (upper && afterLower)) {
        let prefix = 0;
        if (run === SYMBOLS && previous < 0x80) {
          // The punctuation mark right before a word is the word's first character in o200k.
          cost -= lastPrice;
          prefix = WORD_PREFIX;
        }
        closeRun(true);
        run = WORD;
        cost = prefix;
      }
      letters += 1;
      cost += letters > 12 ? LONG_WORD_LETTER : ASCII_LETTER;
      if (isConsonant(c)) {
        consonants += 1;
        if (consonants === 3) cost += THIRD_CONSONANT;
        else if (consonants > 3) cost += CONSONANT_CLUSTER;
      } else {
        consonants = 0;
      }
    } else if (c >= 0x30 && c <= 0x39) {
      if (run !== DIGITS) {
        if (run === WORD) switches += 1;
        // o200k gives a number no leading space: " 42" is two tokens.
        closeRun(false);
        run = DIGITS;
      }
      // Runs of at most three digits: the first of each three starts a token.
      cost += 1 / 3;
    } else {
      const letter = c < 0x80 ? 0 : letterPrice(c);
      if (letter > 0) {
        if (run !== WORD) {
          closeRun(true);
          run = WORD;
        }
        cost += letter;
        consonants = 0;
      } else {
        if (run !== SYMBOLS) {
          closeRun(true);
          run = SYMBOLS;
        }
        lastPrice = c < 0x80 ? asciiMarkPrice(c, previous, marks) : symbolPrice(c);
        if (c < 0x80) marks += 1;
        cost += lastPrice;
      }
    }
    previous = c;
  }
  closeRun(false);
  closeChunk();
  return tokens;
}

/** An ASCII punctuation mark that follows `marks` others in its run. */
function asciiMarkPrice(c: number, previous: number, marks: number): number {
  if (marks === 0) return 1;
  if (c === previous) return REPEATED_PUNCTUATION;
  return marks === 1 ? SECOND_PUNCTUATION : NEXT_PUNCTUATION;
}

function isAsciiLetter(c: number): boolean {
  return (c >= 0x61 && c <= 0x7a) || (c >= 0x41 && c <= 0x5a);
}

function isApostrophe(c: number): boolean {
  return c === 0x27 || c === 0x2019;
}

/** Not a, e, i, o, u or y, in either case; the caller passes an ASCII letter. */
function isConsonant(c: number): boolean {
  const lower = c | 0x20;
  return lower !== 0x61 && lower !== 0x65 && lower !== 0x69 && lower !== 0x6f && lower !== 0x75 && lower !== 0x79;
}

/** The price of a non-ASCII letter in a word, or 0 when `c` is not priced as a letter. */
function letterPrice(c: number): number {
  if (c < 0xc0) return 0; // Latin-1 punctuation and symbols: ©, °, «, no-break space
  if (c === 0xd7 || c === 0xf7) return 0; // × and ÷
  if (c < 0x250) return TWO_BYTE_LETTER; // accented Latin
  if (c >= 0x300 && c < 0x370) return 0; // combining diacritics
  if (c >= 0x400 && c < 0x530) return CYRILLIC_LETTER;
  if (c < 0x800) return TWO_BYTE_LETTER; // IPA, Greek, Armenian, Hebrew, Arabic
  if (c >= 0x900 && c < 0xf00) return INDIC_LETTER; // Indic scripts, Thai, Lao
  if (c >= 0x1e00 && c < 0x2000) return TWO_BYTE_LETTER; // Vietnamese Latin, polytonic Greek
  if (c < 0x2000) return WIDE_LETTER;
  if (c < 0x3040) return 0; // punctuation, symbols, arrows, math, CJK punctuation
  if (c < 0xa000) return WIDE_LETTER; // kana, CJK ideographs
  if (c >= 0xac00 && c < 0xd7b0) return WIDE_LETTER; // Hangul syllables
  if (c >= 0xf900 && c < 0xfb00) return WIDE_LETTER; // CJK compatibility ideographs
  if (c >= 0x20000 && c < 0x40000) return ASTRAL; // rare ideographs
  return 0;
}

/** The price of a symbol outside ASCII, a mark, or any code point not priced as a letter. */
function symbolPrice(c: number): number {
  if (c >= 0x300 && c < 0x370) return COMBINING_MARK;
  if (c >= 0x2070 && c < 0x20a0) return RARE_SYMBOL; // super- and subscripts
  if (c >= 0x2200 && c < 0x2c00) return RARE_SYMBOL; // math, technical, box drawing, dingbats
  if (c < 0x10000) return c >= 0xe000 && c < 0xf900 ? ASTRAL : SYMBOL; // private use: nothing merges it
  if (c >= 0x1f1e6 && c < 0x1f700) return COMMON_EMOJI; // flags, pictographs, faces, transport
  return ASTRAL;
}

/** The calibration factor's bounds: one odd call (a huge paste, a provider's change) moves it so far. */
export const CALIBRATION_RANGE = { min: 0.5, max: 1.5 } as const;
/** Headroom over the last call's ratio: the next prompt is like the last, not the same. */
export const CALIBRATION_MARGIN = 1.1;

/** What the session's previous call cost: the provider's `usage.prompt_tokens` and our raw estimate of that prompt. */
export interface PreviousCall {
  readonly prompt_tokens: number;
  readonly prompt_estimate: number;
}

/**
 * The factor to multiply the next estimate with: the provider's count over ours for the previous
 * call, clamped to CALIBRATION_RANGE, with CALIBRATION_MARGIN on top. Without a previous call (or
 * with one that reported nothing usable) the estimate alone, which is an upper bound by design.
 */
export function calibration(previous: PreviousCall | undefined): number {
  const ratio = reportedRatio(previous);
  return ratio === undefined ? ESTIMATE_MARGIN : ratio * CALIBRATION_MARGIN;
}

/**
 * The most a text of `tokens` true tokens is estimated at, in a session whose previous call is
 * `previous`: the other way round from `calibration`. The session's text estimates at 1/ratio of
 * its true count (the previous prompt's ratio, clamped as the calibration clamps it), and
 * CALIBRATION_MARGIN allows a text unlike the last prompt by as much as the calibration allows the
 * next prompt: `tokens` x margin / ratio. Without a usable report, the estimate's own bound on the
 * corpus (MAX_OVERCOUNT). The estimate counts high by design (median 1.29x): a reply of
 * `max_tokens` true tokens is mostly estimated over `max_tokens`, and it is the estimate a window
 * is fitted with.
 */
export function estimateBound(tokens: number, previous: PreviousCall | undefined): number {
  const ratio = reportedRatio(previous);
  return Math.ceil(tokens * (ratio === undefined ? MAX_OVERCOUNT : CALIBRATION_MARGIN / ratio));
}

/** The provider's count over our estimate for `previous`, clamped to CALIBRATION_RANGE; undefined when it reported nothing usable. */
function reportedRatio(previous: PreviousCall | undefined): number | undefined {
  if (previous === undefined) return undefined;
  const { prompt_tokens: reported, prompt_estimate: estimated } = previous;
  if (!Number.isFinite(reported) || !Number.isFinite(estimated) || reported <= 0 || estimated <= 0) return undefined;
  return Math.min(CALIBRATION_RANGE.max, Math.max(CALIBRATION_RANGE.min, reported / estimated));
}
