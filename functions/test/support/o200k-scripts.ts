/**
 * Messages of about MAX_MESSAGE_CHARS (4,000 UTF-16 units) in scripts, or of emoji, that o200k
 * splits into bytes, each a sample repeated, with their true counts: gpt-tokenizer 4.0.0, installed
 * outside the project as test/fixtures/README.md says, `encode(text).length` from
 * gpt-tokenizer/encoding/o200k_base, and for the prompt [system "You are brief.", user text]
 * `encodeChat(...).length` from gpt-tokenizer/model/gpt-4o-mini.
 */
const fill = (sample: string): string => sample.repeat(Math.floor(3_990 / sample.length));

/** A sentence of Dhivehi (Thaana), which o200k counts at 2 tokens per character and a space. */
export const DHIVEHI_SAMPLE = "ދިވެހިރާއްޖެއަކީ އިންޑިޔާ ކަނޑުގައި އޮންނަ ޖަޒީރާ ދައުލަތެކެވެ. ރާއްޖޭގެ ވެރިރަށަކީ މާލެއެވެ. ދިވެހިބަހަކީ ރަސްމީ ބަހެވެ. ";

export interface ScriptMessage {
  readonly script: string;
  readonly text: string;
  /** Its o200k count. */
  readonly tokens: number;
  /** The o200k chat count of the prompt [system "You are brief.", user text]: what OpenAI reports. */
  readonly promptTokens: number;
}

export const SCRIPT_MESSAGES: readonly ScriptMessage[] = [
  {
    script: "Amharic",
    text: fill("ኢትዮጵያ በአፍሪካ ቀንድ የምትገኝ ጥንታዊ አገር ናት። ዋና ከተማዋ አዲስ አበባ ስትሆን በአፍሪካ ኅብረት መቀመጫነትም ትታወቃለች። የአገሪቱ ሕዝብ ብዛት ከአንድ መቶ ሚሊዮን በላይ ነው፤ ብዙ ቋንቋዎችና ብሔረሰቦች በአንድነት ይኖራሉ። ቡና ለመጀመሪያ ጊዜ የተገኘው በዚህች አገር እንደሆነ ይነገራል። "),
    tokens: 7_161,
    promptTokens: 7_176,
  },
  {
    script: "Lao",
    text: fill("ສາທາລະນະລັດ ປະຊາທິປະໄຕ ປະຊາຊົນລາວ ເປັນປະເທດທີ່ບໍ່ມີທາງອອກສູ່ທະເລ ຢູ່ໃນອາຊີຕາເວັນອອກສ່ຽງໃຕ້. ນະຄອນຫຼວງແມ່ນວຽງຈັນ. "),
    tokens: 7_070,
    promptTokens: 7_085,
  },
  { script: "Dhivehi", text: fill(DHIVEHI_SAMPLE), tokens: 7_328, promptTokens: 7_343 },
  {
    // Old Cyrillic letters U+0460..U+0481 (omega, yat, yus, ksi, psi, fita, izhitsa...): Church Slavonic.
    script: "Old Cyrillic letters",
    text: fill(Array.from({ length: 34 }, (_, i) => String.fromCodePoint(0x460 + i)).join("")),
    tokens: 7_956,
    promptTokens: 7_971,
  },
  {
    // Emoji of U+1F940..U+1F97F typed after spaces, as people type them: o200k has no token joining the space to them.
    script: "emoji typed after spaces (🥰 🥺 🥹)",
    text: fill("so cute 🥰 🥺 🥹 "),
    tokens: 2_575,
    promptTokens: 2_590,
  },
];
