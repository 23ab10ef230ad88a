// Regenerates hf_vectors.jsonl with Hugging Face `tokenizers` (the npm package, HF's Rust core):
//   npm install tokenizers@0.23.2 && node gen_hf_vectors.js /path/to/gpt-neox-20b/tokenizer.json
// Random strings built from adversarial pieces (contractions, Unicode letters/numbers/spaces,
// combining marks, emoji, special tokens, long runs) are encoded with the GPT-NeoX-20B tokenizer and
// with flags_tokenizer.json (added tokens using lstrip / rstrip / single_word / normalized), and
// random id lists are decoded. Each line: {"tok": "neox"|"flags", "kind": "encode"|"decode", ...}.
const {Tokenizer} = require('tokenizers');
const fs = require('fs');
const path = require('path');
let seed = 12345;
function rnd() { seed = (seed * 1103515245 + 12345) & 0x7fffffff; return seed / 0x7fffffff; }
function pick(a) { return a[Math.floor(rnd() * a.length)]; }
const atoms = ['a','b','Z','hello',' world',' ',' ','  ','   ','\t','\n','\r\n','\n\n','0','42','3.14',',','.','!','?','...','--','"',"'","'s","'t","'re","'ve","'m","'ll","'d","'S","'LL","'Re",
 'é','e\u0301','ß','Ж','слово','東京','٣','𝟘','🦙','😶‍🌫️','\u200d','\u00a0','\u3000','\u2028','\u0085','\u00ad','\ufe0f','\u0301','Ⅻ','½','_','$','<','>','|',
 '<|endoftext|>','<|padding|>','<|endoftext','|>','A\u030a','\u212b','ﬁ','\u1100\u1161','x'.repeat(70),' '.repeat(30),' '.repeat(25)+'y','!'.repeat(80),'\u0000','\u007f','\u{10ffff}','\ud7ff',
 '[MASK]',' [MASK] ','<sw>',' <sw> ','<r>  ','sw',' sw ','é!'];
function randText() { let n = 1 + Math.floor(rnd() * 12), s = ''; for (let i = 0; i < n; i++) s += pick(atoms); return s; }
async function main() {
  const out = [];
  const toks = {neox: process.argv[2], flags: path.join(__dirname, 'flags_tokenizer.json')};
  for (const [name, file] of Object.entries(toks)) {
    const t = await Tokenizer.fromFile(file);
    for (let i = 0; i < 1500; i++) {
      const text = randText();
      const e = await t.encode(text, null, {addSpecialTokens: false});
      out.push(JSON.stringify({tok: name, kind: 'encode', text, ids: e.getIds()}));
    }
    const vs = t.getVocabSize(true);
    for (let i = 0; i < 500; i++) {
      const n = 1 + Math.floor(rnd() * 6), ids = [];
      for (let k = 0; k < n; k++) ids.push(rnd() < 0.5 ? Math.floor(rnd() * 300) : Math.floor(rnd() * vs));
      const skip = rnd() < 0.5;
      out.push(JSON.stringify({tok: name, kind: 'decode', ids, skip, text: await t.decode(ids, skip)}));
    }
  }
  fs.writeFileSync(path.join(__dirname, 'hf_vectors.jsonl'), out.join('\n') + '\n');
  console.log(out.length, 'vectors');
}
main();
