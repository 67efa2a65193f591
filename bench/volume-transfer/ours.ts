/** stowage itself, through the SDK as a user would call it: BatchUpload → commit, and download. */
import { Volume, type Connection, type TransferStats } from '../../src/client/index.js';
import type { Contender, Detail } from './contender.js';
import type { BigFile, SmallFiles } from './dataset.js';

const BIG_PATH = '/big.bin';
const SMALL_DIR = '/small';

export class StowageSdk implements Contender {
  readonly name = 'stowage';

  private constructor(
    private readonly big: Volume,
    private readonly small: Volume,
  ) {}

  static async open(connection: Connection, chunkSize: number): Promise<StowageSdk> {
    const opts = { connection, chunkSize, createIfMissing: true };
    return new StowageSdk(
      await Volume.fromName('bench-big', opts),
      await Volume.fromName('bench-small', opts),
    );
  }

  async putBig(file: BigFile): Promise<Detail> {
    return this.putBigFile(file, false);
  }

  /** The same file again with force: chunks the store has are not sent. */
  async putBigAgain(file: BigFile): Promise<Detail> {
    return this.putBigFile(file, true);
  }

  async getBig(dest: string): Promise<Detail> {
    return facts(await this.big.download(BIG_PATH, dest));
  }

  async putSmall(set: SmallFiles): Promise<Detail> {
    return facts(await this.small.batchUpload().putDirectory(set.dir, SMALL_DIR).commit());
  }

  async getSmall(destDir: string): Promise<Detail> {
    return facts(await this.small.download(SMALL_DIR, destDir));
  }

  private async putBigFile(file: BigFile, force: boolean): Promise<Detail> {
    return facts(await this.big.batchUpload({ force }).putFile(file.path, BIG_PATH).commit());
  }
}

function facts(s: TransferStats & { version: number }): Detail {
  return {
    version: s.version,
    files: s.files,
    chunks: s.chunks,
    chunksTransferred: s.chunksTransferred,
    bytesTransferred: s.bytesTransferred,
    sdkSeconds: Number(s.seconds.toFixed(3)),
  };
}
