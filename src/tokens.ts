/** The service the Compute sidebar plugin provides to the other plugins of the extension. */
import { Token } from '@lumino/coreutils';

import type { ComputeController } from './controller';
import type { ComputeModel } from './model';

export interface IComputeService {
  model: ComputeModel;
  controller: ComputeController;
}

export const IComputeService = new Token<IComputeService>(
  'jupyter-compute:IComputeService',
  'The Compute sidebar model and the actions on compute targets.'
);
