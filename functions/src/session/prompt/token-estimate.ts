/**
 * An upper estimate of the tokens a text costs with OpenAI's o200k_base encoding (the gpt-4o
 * family), without a tokenizer: a real one costs ~200 ms and ~60 MiB on its first use in an
 * instance (gpt-tokenizer 4.0.0; js-tiktoken ~750 ms and ~165 MiB), which a cold start would pay
 * for one budget check. The estimate follows o200k's pre-tokenizer, whose pieces BPE never merges
 * across: words (a lower-to-upper case change starts a new one), runs of at most 3 digits,
 * punctuation runs, whitespace, and prices each piece from what it holds.
 *
 * Measured against gpt-tokenizer 4.0.0 (o200k_base) on test/fixtures/o200k-corpus.json (95 texts:
 * English prose, chat, code, JSON, numbers, IDs, URLs, 39 other languages and scripts, emoji alone
 * and after spaces, whitespace and repeated characters, symbols, random letters), estimate / true
 * tokens: min 1.00, median 1.19 (1.29 on its first 54 texts, 1.10 on the 33 added for other
 * scripts, 1.01 on the 8 of emoji and symbols after spaces), max 2.75 (long runs of one repeated
 * character, which o200k packs tightly); English prose 1.19 to 1.38 (1.95 for a line of very long
 * words); code and JSON 1.04 to 1.42. Never below the true count on that corpus: ESTIMATE_MARGIN
 * is 1. The scripts the corpus does not hold are priced at what o200k makes of a code point it has
 * no token for (PRICE_ROWS), the most one code point costs; every code point beyond the BMP, alone
 * and after a space, is priced at least at its count. On texts not used to fit the prices
 * (measured before PRICE_ROWS, with the same ASCII prices): package READMEs in 600-character
 * slices 0.1% under (min 0.78, median 1.33), TypeScript 0% (median 1.38), random base64, hex and
 * UUIDs 0.5 to 2.5% under (min 0.71). The known blind spots:
 * random lowercase letters with vowels ("qviwbe"), 28% under, min 0.29, and the words of many
 * languages in Latin script, priced as English ones: a sentence of Italian, Hungarian, Welsh,
 * Czech, Romanian, Icelandic, Yoruba or pinyin 0.71 to 0.96 (French, Spanish, German are fine);
 * telling them from English would take a bigram table. And the rare characters of a script
 * priced as fitted on its common ones (a rare CJK ideograph or Hangul syllable costs 2 or 3
 * tokens, priced at 1). The session's calibration (below) corrects a steady bias like that.
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
 * The most `estimateTokens` prices one UTF-16 code unit: a code point of the BMP that o200k
 * splits into its 3 UTF-8 bytes (private use, Hangul Jamo, CJK Extension A) at 3; one beyond it
 * at most 4 for its 2 units. A text of n units is estimated at most 3n, plus a token for a run
 * left open at its end. Tested against arbitrary text.
 */
export const MAX_TOKENS_PER_CHAR = 3;

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

// What the piece after a whitespace run makes of the run's last space or tab (closeRun).
/** Takes it into its first token: " hello", " 😂". */
const SPACE_JOINS = 0;
/** Leaves it a token of its own: a number, or what o200k has no token with a space for. */
const SPACE_SPLITS = 1;
/** There is no piece after it: the text ends, and the run is one piece. */
const TEXT_END = 2;

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
/** Letters of alphabets o200k holds many words of: accented Latin, Greek, Armenian, Hebrew, Arabic, Georgian. */
const ALPHABET_LETTER = 0.5;
/** Russian letters: o200k has many Russian words whole. */
const CYRILLIC_LETTER = 0.3;
/** Indic and Thai letters: 3 bytes, and o200k has their common syllables. */
const INDIC_LETTER = 0.55;
/** Sinhala and Oriya letters: o200k has fewer of their syllables. */
const SINHALA_LETTER = 0.75;
const ORIYA_LETTER = 1.2;
/**
 * CJK ideographs, kana, Hangul, Myanmar, Khmer; and letters o200k has a token for but few words
 * with: Latin Extended-A (Czech, Polish, Turkish), ё and the Cyrillic of Ukrainian, Serbian,
 * Kazakh or Tatar, Arabic vowel marks.
 */
const WIDE_LETTER = 1;
/** A letter priced this or more is seldom merged with the ASCII letters beside it ("kwɪk", "Všichni"). */
const SPLITTING_LETTER = 1;
/**
 * A code point o200k has no token for, split into 2 tokens (its 2 UTF-8 bytes, or 3 bytes of
 * which it holds the first two as one), 3 (a token per byte), or beyond the BMP 4.
 */
const SPLIT_IN_2 = 2;
const SPLIT_IN_3 = 3;
const SPLIT_IN_4 = 4;
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
/** Newer emoji and math letters beyond the BMP: 4 UTF-8 bytes, of which o200k holds the first two or three as one token. */
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
  return longestStart(text, (start) => estimateTokens(start) <= tokens);
}

/**
 * A longest start of `text`, cut between code points (never inside a surrogate pair), that `fits`,
 * found by a binary search: `fits` is asked of O(log n) starts, so a measure that grows with its
 * start's length, as the token estimate does, finds a start that fits and that one more point
 * would not (the estimate is not strictly monotone: not always the longest of all). `whole`: whether
 * the whole text is a candidate (a caller that knows it does not fit leaves it out). "" when none fits.
 */
export function longestStart(text: string, fits: (start: string) => boolean, whole = true): string {
  // Where each code point ends, in UTF-16 units.
  const ends = [0];
  let end = 0;
  for (const point of text) {
    end += point.length;
    ends.push(end);
  }
  let [low, high] = [0, ends.length - (whole ? 1 : 2)];
  while (low < high) {
    const middle = Math.ceil((low + high) / 2);
    if (fits(text.slice(0, ends[middle]))) low = middle;
    else high = middle - 1;
  }
  return text.slice(0, ends[low]);
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
  /** Whether `previous` is a letter that o200k splits from ASCII letters next to it (SPLITTING_LETTER). */
  let previousSplits = false;
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

  /** Closes the current run; `next` says what the piece after a whitespace run makes of its last space or tab. */
  const closeRun = (next: number): void => {
    if (run === SPACE) {
      tokens += Math.ceil(lineBreakRun * LINE_BREAK_RUN);
      if (next === TEXT_END) {
        tokens += Math.ceil(trailing);
      } else {
        // o200k's pre-tokenizer gives the last space (or tab) to the piece after it, the rest of the
        // run being a piece of its own: " hello" is one token with it, " 42" or " 🥺" one more, and
        // "a  🥺" is "a", " ", " " and two more.
        tokens += Math.ceil(trailing - lastPrice) + (next === SPACE_SPLITS && lastPrice > 0 ? 1 : 0);
      }
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

    const afterSplitting = previousSplits;
    previousSplits = false;
    if (c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d || c === 0x0b || c === 0x0c) {
      if (run !== SPACE) {
        closeRun(TEXT_END); // not a whitespace run: `next` goes unread
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
      // o200k starts a word at a lower-to-upper change: "getElementById" is four pieces. Its
      // merges seldom join ASCII letters to a letter it holds no short token for ("kwɪk", "Všichni").
      if (run !== WORD || (upper && afterLower) || afterSplitting) {
        let prefix = 0;
        if (run === SYMBOLS && previous < 0x80) {
          // The punctuation mark right before a word is the word's first character in o200k.
          cost -= lastPrice;
          prefix = WORD_PREFIX;
        }
        closeRun(SPACE_JOINS);
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
        closeRun(SPACE_SPLITS);
        run = DIGITS;
      }
      // Runs of at most three digits: the first of each three starts a token.
      cost += 1 / 3;
    } else {
      const row = c < 0x80 ? undefined : priceRow(c);
      if (row !== undefined && row[1] === LETTER) {
        const splitting = row[2] >= SPLITTING_LETTER;
        if (run !== WORD || (splitting && isAsciiLetter(previous))) {
          // o200k has no token joining a space to a letter it splits into bytes: " ሰላም" is " " and 6 more.
          closeRun(row[2] < SPLIT_IN_2 ? SPACE_JOINS : SPACE_SPLITS);
          run = WORD;
        }
        previousSplits = splitting;
        cost += row[2];
        consonants = 0;
      } else {
        if (run !== SYMBOLS) {
          // Nor one joining a space to a rare symbol (" ①" is two tokens) or to many emoji (" 🥺" is three), as it has for others (" 😂" is one).
          closeRun(row === undefined || row[1] === MARK ? SPACE_JOINS : SPACE_SPLITS);
          run = SYMBOLS;
        }
        lastPrice = row === undefined ? asciiMarkPrice(c, previous, marks) : row[2];
        if (c < 0x80) marks += 1;
        cost += lastPrice;
      }
    }
    previous = c;
  }
  closeRun(TEXT_END);
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

/**
 * How a code point above ASCII is read: a letter joins a word; anything else makes a symbol run,
 * which o200k's pre-tokenizer gives the space before it (" 😂"). A MARK's first token takes that
 * space in (o200k has " 😂"); a LONE_MARK's does not (" 🥺", " ①": the space is a token of its
 * own), as for a letter priced SPLIT_IN_2 or more.
 */
const LETTER = 1;
const MARK = 0;
const LONE_MARK = 2;

/**
 * Prices of the code points above ASCII, as rows [first code point, LETTER, MARK or LONE_MARK,
 * tokens], each up to the next row's first. The scripts and symbols of the corpus are priced as
 * fitted on it. Every other block is priced at what o200k makes of a code point it has no token
 * for (SPLIT_IN_2 to SPLIT_IN_4, as measured per block): the most one code point alone costs, and
 * what the text costs where o200k merges nothing, as in Amharic, Lao, Dhivehi, Syriac, N'Ko or
 * Church Slavonic (1.8 to 2 tokens per character). Not so the letters of a script o200k has
 * tokens for (Armenian, Bengali, Myanmar...): priced at their bytes, its texts would count 4 or
 * more times over, past what call-usage.ts believes of a report; they are priced as fitted on the
 * corpus's texts of them. Beyond the BMP every code point was measured alone and after a space
 * (gpt-tokenizer 4.0.0): a row's price covers each alone, a MARK's each with the space before it,
 * a LONE_MARK's each with a token more. o200k's tokens go by 64 code points (those that share
 * their first three UTF-8 bytes), so its emoji rows do too.
 */
type PriceRow = readonly [first: number, kind: number, price: number];
const PRICE_ROWS: readonly PriceRow[] = [
  [0x80, LONE_MARK, SPLIT_IN_2], // C1 controls
  [0xa0, MARK, SYMBOL], // Latin-1 punctuation and symbols: ©, °, «, no-break space
  [0xc0, LETTER, ALPHABET_LETTER], // accented Latin: French, Spanish, German
  [0xd7, MARK, SYMBOL], // ×
  [0xd8, LETTER, ALPHABET_LETTER],
  [0xf7, MARK, SYMBOL], // ÷
  [0xf8, LETTER, ALPHABET_LETTER],
  [0x100, LETTER, WIDE_LETTER], // Latin Extended-A: Czech, Polish, Turkish
  [0x180, LETTER, SPLIT_IN_2], // Latin Extended-B: African letters, pinyin
  [0x218, LETTER, ALPHABET_LETTER], // Romanian ș, ț
  [0x21c, LETTER, SPLIT_IN_2], // and IPA
  [0x2b0, LONE_MARK, SPLIT_IN_2], // spacing modifiers: ʼ, ˈ, ː
  [0x300, MARK, COMBINING_MARK], // combining diacritics
  [0x30d, LONE_MARK, SPLIT_IN_2], // the rarer ones
  [0x370, LETTER, ALPHABET_LETTER], // Greek
  [0x3cf, LETTER, SPLIT_IN_2], // Coptic and archaic letters in the Greek block
  [0x400, LETTER, CYRILLIC_LETTER], // Russian, Bulgarian
  [0x450, LETTER, WIDE_LETTER], // ё, and the letters of Ukrainian, Belarusian, Serbian, Macedonian
  [0x460, LETTER, SPLIT_IN_2], // Old Cyrillic letters and marks (Church Slavonic)
  [0x48a, LETTER, WIDE_LETTER], // Cyrillic letters of Kazakh, Tatar, Bashkir, Mongolian...
  [0x500, LETTER, SPLIT_IN_2], // Cyrillic Supplement: Komi, Abkhaz...
  [0x530, LETTER, ALPHABET_LETTER], // Armenian
  [0x590, LETTER, SPLIT_IN_2], // Hebrew points and cantillation
  [0x5d0, LETTER, ALPHABET_LETTER], // Hebrew letters, Arabic
  [0x64b, LETTER, WIDE_LETTER], // Arabic vowel marks
  [0x660, LETTER, ALPHABET_LETTER], // Arabic of Persian, Urdu, Pashto, Uyghur
  [0x700, LETTER, SPLIT_IN_2], // Syriac, Arabic Supplement, Thaana (Dhivehi), N'Ko
  [0x800, LETTER, SPLIT_IN_3], // Samaritan, Mandaic, Arabic Extended
  [0x900, LETTER, INDIC_LETTER], // Devanagari, Bengali, Gurmukhi, Gujarati
  [0xb00, LETTER, ORIYA_LETTER], // Oriya
  [0xb80, LETTER, INDIC_LETTER], // Tamil, Telugu, Kannada, Malayalam
  [0xd80, LETTER, SINHALA_LETTER], // Sinhala
  [0xe00, LETTER, INDIC_LETTER], // Thai
  [0xe80, LETTER, SPLIT_IN_2], // Lao, Tibetan
  [0xfc0, LETTER, SPLIT_IN_3],
  [0x1000, LETTER, WIDE_LETTER], // Myanmar
  [0x10d0, LETTER, ALPHABET_LETTER], // Georgian
  [0x1100, LETTER, SPLIT_IN_3], // Hangul Jamo (decomposed Korean)
  [0x1200, LETTER, SPLIT_IN_2], // Ethiopic (Amharic, Tigrinya)
  [0x1380, LETTER, SPLIT_IN_3], // Cherokee, Canadian syllabics, Ogham, Runic, Philippine scripts
  [0x1780, LETTER, WIDE_LETTER], // Khmer
  [0x1800, LETTER, SPLIT_IN_3], // Mongolian, and the scripts of Southeast Asia after it
  [0x1d00, LETTER, SPLIT_IN_2], // phonetic extensions
  [0x1d40, LETTER, SPLIT_IN_3],
  [0x1e00, LETTER, ALPHABET_LETTER], // Vietnamese Latin
  [0x1f00, LETTER, SPLIT_IN_2], // polytonic Greek
  [0x1f80, LETTER, SPLIT_IN_3],
  [0x1fc0, LETTER, SPLIT_IN_2],
  [0x2000, MARK, SYMBOL], // punctuation: dashes, quotes, bullets
  [0x2070, LONE_MARK, RARE_SYMBOL], // super- and subscripts, currency
  [0x20ac, MARK, SYMBOL], // €
  [0x20ad, LONE_MARK, RARE_SYMBOL], // currency, letterlike symbols, number forms
  [0x2190, MARK, SYMBOL], // ←, ↑, →, ↓
  [0x2194, LONE_MARK, RARE_SYMBOL], // arrows, math, technical
  [0x2340, LONE_MARK, SPLIT_IN_3], // technical, control pictures
  [0x2440, LONE_MARK, RARE_SYMBOL], // enclosed alphanumerics, box drawing, shapes, symbols
  [0x26c0, LONE_MARK, SPLIT_IN_3],
  [0x2700, LONE_MARK, RARE_SYMBOL], // dingbats
  [0x27c0, LONE_MARK, SPLIT_IN_3], // math, arrows, Braille
  [0x2b00, LONE_MARK, SPLIT_IN_2],
  [0x2b40, LONE_MARK, SPLIT_IN_3],
  [0x2c00, LETTER, SPLIT_IN_3], // Glagolitic, Coptic, Tifinagh, Ethiopic and Cyrillic extensions
  [0x2e00, LONE_MARK, SPLIT_IN_3], // supplemental punctuation, CJK radicals
  [0x3000, MARK, SYMBOL], // CJK punctuation: 、。「」
  [0x3018, LONE_MARK, SPLIT_IN_2],
  [0x3040, LETTER, WIDE_LETTER], // kana
  [0x3100, LETTER, SPLIT_IN_2], // Bopomofo
  [0x3130, LETTER, WIDE_LETTER], // Hangul compatibility jamo: ㅋㅋ
  [0x3190, LETTER, SPLIT_IN_3],
  [0x3200, LONE_MARK, SPLIT_IN_2], // enclosed CJK
  [0x3240, LONE_MARK, SPLIT_IN_3],
  [0x3380, LONE_MARK, SPLIT_IN_2], // ㎏, ㎝
  [0x33c0, LONE_MARK, SPLIT_IN_3],
  [0x3400, LETTER, SPLIT_IN_3], // CJK Extension A
  [0x4e00, LETTER, WIDE_LETTER], // CJK ideographs
  [0xa000, LETTER, SPLIT_IN_3], // Yi, Vai, Cyrillic Extended-B, Javanese...
  [0xac00, LETTER, WIDE_LETTER], // Hangul syllables
  [0xd7b0, LETTER, SPLIT_IN_3],
  [0xd800, MARK, SYMBOL], // a lone surrogate: U+FFFD in UTF-8, one token
  [0xe000, LONE_MARK, SPLIT_IN_3], // private use
  [0xf900, LETTER, SPLIT_IN_3], // CJK compatibility ideographs
  [0xfb00, LETTER, SPLIT_IN_2], // ligatures, Hebrew presentation forms
  [0xfb40, LETTER, SPLIT_IN_3], // Arabic presentation forms
  [0xfe00, LONE_MARK, SPLIT_IN_2], // variation selectors, small and vertical forms
  [0xfe70, LETTER, SPLIT_IN_2], // Arabic presentation forms
  [0xff00, MARK, SYMBOL], // fullwidth forms: ！，（
  [0xff65, LETTER, SPLIT_IN_2], // halfwidth kana and Hangul
  [0xffe0, LONE_MARK, SPLIT_IN_2],
  [0x10000, LETTER, SPLIT_IN_4], // historic scripts
  [0x1d000, LETTER, ASTRAL], // musical symbols, math letters: 𝐇𝐞𝐥𝐥𝐨
  [0x1e000, LETTER, SPLIT_IN_4],
  [0x1f000, MARK, ASTRAL], // mahjong, cards
  [0x1f100, LONE_MARK, ASTRAL], // 🄀..🄌: digits to o200k's pre-tokenizer, which gives a number no space
  [0x1f10d, MARK, ASTRAL], // enclosed alphanumerics: 🅰, 🆗
  [0x1f1e6, MARK, COMMON_EMOJI], // regional indicators (flags)
  [0x1f200, MARK, ASTRAL], // enclosed ideographs: 🈁, 🉐
  [0x1f300, MARK, COMMON_EMOJI], // 🌍, 🍕, 🎉
  [0x1f3c0, LONE_MARK, COMMON_EMOJI], // 🏆, 🏠, skin tones, 🐶, 🐱: " 🐶" is " " and 2 tokens
  [0x1f440, MARK, COMMON_EMOJI], // 👍, 💯, 🔥
  [0x1f540, MARK, ASTRAL],
  [0x1f600, MARK, COMMON_EMOJI], // faces, transport: " 😂" is one token
  [0x1f6c0, MARK, ASTRAL],
  [0x1f900, MARK, COMMON_EMOJI], // 🤔, 🤣, 🤗
  [0x1f940, LONE_MARK, COMMON_EMOJI], // 🥰, 🥳, 🥺, 🥹: " 🥺" is " " and 2 tokens
  [0x1f980, MARK, ASTRAL], // newer emoji: 🦄, 🫠
  [0x1fbf0, LONE_MARK, ASTRAL], // segmented digits: numbers to o200k
  [0x1fbfa, MARK, ASTRAL],
  [0x20000, LETTER, SPLIT_IN_4], // rare ideographs
  [0x40000, LONE_MARK, SPLIT_IN_4], // tags (subdivision flags), private use
];

/** For each BMP code point, its row in PRICE_ROWS (fewer than 256): one lookup per character, built once (64 KiB). */
const BMP_ROWS = ((): Uint8Array => {
  const rows = new Uint8Array(0x10000);
  // Each row fills from its first code point on; the rows after it overwrite the rest.
  PRICE_ROWS.forEach(([first], row) => {
    if (first < 0x10000) rows.fill(row, first);
  });
  return rows;
})();
const ASTRAL_ROWS = PRICE_ROWS.filter(([first]) => first >= 0x10000);
/** What a code point no row covers would cost; there is none, the rows run from U+0080 on. */
const UNPRICED: PriceRow = [0, LONE_MARK, SPLIT_IN_4];

/** The row of PRICE_ROWS that prices `c`, a code point above ASCII. */
function priceRow(c: number): PriceRow {
  if (c < 0x10000) return PRICE_ROWS[BMP_ROWS[c] ?? 0] ?? UNPRICED;
  let found = UNPRICED;
  for (const row of ASTRAL_ROWS) {
    if (row[0] > c) break;
    found = row;
  }
  return found;
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
 * The most the calibration of the session's next call can be, once the report of the call made
 * with `previous`'s calibration sets it: that call's ratio is unknown until its reply, so it is
 * taken at the most the calibration itself allows (the last ratio times CALIBRATION_MARGIN,
 * within CALIBRATION_RANGE), with the margin on top as every calibration has it. Without a usable
 * report, the range's top: the estimate's weak spots (a sentence of Italian, 0.71x) put a first
 * report as high as 1.4x. What predicts the next prompt (context-window.ts nextWindowStart) uses
 * it: a lower factor fits a predicted window longer than the next prompt's.
 */
export function calibrationCeiling(previous: PreviousCall | undefined): number {
  const ratio = reportedRatio(previous);
  return Math.min(CALIBRATION_RANGE.max, ratio === undefined ? CALIBRATION_RANGE.max : ratio * CALIBRATION_MARGIN) * CALIBRATION_MARGIN;
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
