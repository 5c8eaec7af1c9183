// Immich's TypeScript SDK (@immich/sdk 3.2.2) against a Tessera node: search, places, the map,
// timeline buckets, explore and memories, in the shapes the SDK's types declare. Prints
// "SEARCH OK <summary>" or throws. Env: TESSERA_URL, TESSERA_API_KEY, SDK_PATH, PHOTO_PARIS
// (EXIF: Canon, 2020-05-17, GPS at Notre-Dame), PHOTO_PLAIN (no EXIF).
import { readFileSync } from 'node:fs';

const sdk = await import(process.env.SDK_PATH);
sdk.defaults.baseUrl = process.env.TESSERA_URL + '/api';
sdk.defaults.headers = { 'x-api-key': process.env.TESSERA_API_KEY };
const must = (cond, what) => { if (!cond) throw new Error('FAILED: ' + what); };
const j = (v) => JSON.stringify(v);
const upload = (path, name) => sdk.uploadAsset({
  assetMediaCreateDto: {
    assetData: new Blob([readFileSync(path)]),
    deviceAssetId: name, deviceId: 'sdk-search',
    fileCreatedAt: '2024-06-01T10:00:00.000Z', fileModifiedAt: '2024-06-01T10:00:00.000Z',
    filename: name,
  },
});
const paris = await upload(process.env.PHOTO_PARIS, 'notre-dame.jpg');
const plain = await upload(process.env.PHOTO_PLAIN, 'plain.jpg');
must(paris.status === 'created' && plain.status === 'created', 'uploads');
// Thumbnails and places are made in the background: wait for the place.
let info;
for (let i = 0; i < 120; i++) {
  info = await sdk.getAssetInfo({ id: paris.id });
  if (info.exifInfo?.city) break;
  await new Promise((r) => setTimeout(r, 250));
}
must(info.exifInfo.city === 'Paris' && info.exifInfo.country === 'France', 'the place: ' + j(info.exifInfo));
must(typeof info.exifInfo.state === 'string' && info.exifInfo.state.length > 0, 'a state');

// Metadata search with Immich's filters, alone and combined.
const ids = (r) => r.assets.items.map((a) => a.id);
let r = await sdk.searchAssets({ metadataSearchDto: { city: 'Paris' } });
must(j(ids(r)) === j([paris.id]) && r.assets.total === 1 && r.assets.count === 1, 'city: ' + j(r.assets));
r = await sdk.searchAssets({ metadataSearchDto: { make: 'Canon', takenAfter: '2020-05-01T00:00:00.000Z', takenBefore: '2020-06-01T00:00:00.000Z', type: 'IMAGE' } });
must(j(ids(r)) === j([paris.id]), 'camera and dates: ' + j(ids(r)));
r = await sdk.searchAssets({ metadataSearchDto: { make: 'Canon', takenAfter: '2021-01-01T00:00:00.000Z' } });
must(r.assets.total === 0, 'dates exclude: ' + j(ids(r)));
r = await sdk.searchAssets({ metadataSearchDto: { originalFileName: 'plain' } });
must(j(ids(r)) === j([plain.id]), 'file name: ' + j(ids(r)));
r = await sdk.searchAssets({ metadataSearchDto: { size: 1, page: 1 } });
must(r.assets.items.length === 1 && r.assets.nextPage === '2', 'paging: ' + j(r.assets));
r = await sdk.searchAssets({ metadataSearchDto: { ocr: 'anything' } });
must(r.assets.total === 0, 'ocr filter with nothing read');

// Suggestions narrow by the field above; explore lists places with a photo each.
const countries = await sdk.getSearchSuggestions({ $type: 'country' });
must(countries.includes('France'), 'country suggestions: ' + j(countries));
const cities = await sdk.getSearchSuggestions({ $type: 'city', country: 'France' });
must(j(cities) === j(['Paris']), 'city suggestions: ' + j(cities));
const makes = await sdk.getSearchSuggestions({ $type: 'camera-make' });
must(makes.includes('Canon'), 'camera suggestions: ' + j(makes));
const explore = await sdk.getExploreData();
const places = explore.find((e) => e.fieldName === 'exifInfo.city');
must(places && places.items.some((i) => i.value === 'Paris' && i.data.id === paris.id), 'explore: ' + j(explore));
const byCity = await sdk.getAssetsByCity();
must(byCity.some((a) => a.id === paris.id), 'assets by city');

// The map.
const markers = await sdk.getMapMarkers({});
must(markers.length === 1, 'one located photo: ' + j(markers));
const m = markers[0];
must(m.id === paris.id && Math.abs(m.lat - 48.853) < 0.01 && Math.abs(m.lon - 2.3499) < 0.01 && m.city === 'Paris', 'marker: ' + j(m));

// Timeline buckets, Immich's column arrays.
const buckets = await sdk.getTimeBuckets({});
const total = buckets.reduce((n, b) => n + b.count, 0);
must(total === 2, 'two photos in the buckets: ' + j(buckets));
const may = buckets.find((b) => b.timeBucket.startsWith('2020-05'));
must(may && may.count === 1, 'May 2020: ' + j(buckets));
const bucket = await sdk.getTimeBucket({ timeBucket: may.timeBucket });
must(j(bucket.id) === j([paris.id]) && bucket.city[0] === 'Paris' && bucket.isFavorite.length === 1, 'bucket columns: ' + j(bucket));

// Memories answer in Immich's shape (none on a library this small).
const memories = await sdk.searchMemories({});
must(Array.isArray(memories), 'memories');

console.log(`SEARCH OK city/camera/dates/name/paging, ${countries.length} countries, ${markers.length} marker, ${buckets.length} buckets, ${memories.length} memories`);
