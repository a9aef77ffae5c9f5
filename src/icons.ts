/** The icons jupyter_compute adds to JupyterLab. */
import { LabIcon } from '@jupyterlab/ui-components';

import computeSvg from '../style/icons/compute.svg';

export const computeIcon = new LabIcon({
  name: 'jupyter-compute:compute',
  svgstr: computeSvg
});
