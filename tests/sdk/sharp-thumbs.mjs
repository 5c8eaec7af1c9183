// `cargo xtask bench` (part): Immich's own thumbnail pipeline, for the ingest comparison.
//
// What Immich's server does for each photo (server/src/repositories/media.repository.ts,
// MediaService with the default system config): decode once to a raw buffer shrunk on load to
// the preview's size (`resize(1440, 1440, {fit: 'outside'})`; pipeline colourspace sRGB, which
// Immich picks for 8-bit photos tagged sRGB or not tagged at all, `MediaService.isSRGB`), then from that buffer a 1440-px JPEG preview (q80, 4:4:4), a 250-px WebP
// thumbnail (q80, 4:4:4) and a thumbhash. Files are worked `WORKERS` at a time with sharp's
// default thread pool, as Immich's job queue does.
//
// With MODE=lean: no ICC transform and 4:2:0 chroma (what Tessera's own outputs use), the
// least sharp can do for the same sizes.
//
// usage: SHARP_MODULES=DIR/node_modules [MODE=lean] node sharp-thumbs.mjs OUT_DIR WORKERS FILE...
// prints {"files", "seconds", "mode", "sharp", "libvips"} as JSON
import { mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join, basename } from 'node:path';

const require = createRequire(join(process.env.SHARP_MODULES, 'x.js'));
const sharp = require('sharp');
const { rgbaToThumbHash } = await import(require.resolve('thumbhash'));

sharp.cache({ files: 0 });

const [out, workersArg, ...files] = process.argv.slice(2);
const workers = Number(workersArg) || 2;
mkdirSync(out, { recursive: true });

const lean = process.env.MODE === 'lean';
const chromaSubsampling = lean ? '4:2:0' : '4:4:4';
const pipeline = (input, raw) => {
  const p = sharp(input, { failOn: 'error', limitInputPixels: false, raw });
  return lean ? p : p.pipelineColorspace('srgb').withIccProfile('srgb');
};

async function one(file) {
  const { data, info } = await pipeline(file)
    .rotate()
    .resize(1440, 1440, { fit: 'outside', withoutEnlargement: true })
    .raw()
    .toBuffer({ resolveWithObject: true });
  const raw = { width: info.width, height: info.height, channels: info.channels };
  const stem = basename(file).replace(/\.[^.]*$/, '');
  const thumbhash = sharp(data, { raw })
    .resize(100, 100, { fit: 'inside', withoutEnlargement: true })
    .raw()
    .ensureAlpha()
    .toBuffer({ resolveWithObject: true })
    .then(({ data: px, info: i }) => rgbaToThumbHash(i.width, i.height, px));
  await Promise.all([
    pipeline(data, raw)
      .resize(1440, 1440, { fit: 'outside', withoutEnlargement: true })
      .jpeg({ quality: 80, chromaSubsampling })
      .toFile(join(out, `${stem}-preview.jpeg`)),
    pipeline(data, raw)
      .resize(250, 250, { fit: 'outside', withoutEnlargement: true })
      .webp({ quality: 80, chromaSubsampling })
      .toFile(join(out, `${stem}-thumbnail.webp`)),
    thumbhash,
  ]);
}

const started = process.hrtime.bigint();
let next = 0;
await Promise.all(
  Array.from({ length: workers }, async () => {
    while (next < files.length) {
      await one(files[next++]);
    }
  }),
);
const seconds = Number(process.hrtime.bigint() - started) / 1e9;
console.log(
  JSON.stringify({
    files: files.length,
    seconds,
    mode: lean ? 'lean' : 'immich',
    sharp: sharp.versions.sharp,
    libvips: sharp.versions.vips,
  }),
);
