/**
 * The plugins of jupyter_compute's JupyterLab extension: the Compute sidebar with its
 * commands and settings, the notebook toolbar's target picker, and the kernels of targets
 * (kept in step in JupyterLab's kernel lists, and in the Launcher's Compute section).
 */
import {
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ICommandPalette, Notification } from '@jupyterlab/apputils';
import { ILauncher } from '@jupyterlab/launcher';
import { ISettingRegistry } from '@jupyterlab/settingregistry';

import { ComputeApi } from './api';
import { registerCommands } from './commands';
import { ComputePanel } from './components/ComputePanel';
import { TargetPickerExtension } from './components/TargetPicker';
import { ComputeController } from './controller';
import { DetailsTabs } from './detailsTabs';
import { computeIcon } from './icons';
import {
  KernelEndedNotifier,
  KernelSpecsFollower,
  mayHaveMissedNews
} from './kernelspecs';
import { ComputeLauncherItems, addNewNotebookCommand } from './launcher';
import { ComputeModel } from './model';
import { openPageTab } from './pageTab';
import { followSettings } from './settings';
import { IComputeService } from './tokens';

export { ComputeApi } from './api';
export { ComputeApiError } from './request';
export { ComputeModel } from './model';
export { IComputeService } from './tokens';
export { CommandIDs } from './commands';

const PLUGIN_ID = 'jupyter-compute:plugin';

const sidebar: JupyterFrontEndPlugin<IComputeService> = {
  id: PLUGIN_ID,
  description:
    'The Compute sidebar: compute targets grouped by family, with live state.',
  autoStart: true,
  provides: IComputeService,
  optional: [ICommandPalette, ISettingRegistry, ILayoutRestorer],
  activate: (
    app: JupyterFrontEnd,
    palette: ICommandPalette | null,
    settingRegistry: ISettingRegistry | null,
    restorer: ILayoutRestorer | null
  ): IComputeService => {
    const { serviceManager, shell } = app;
    const api = new ComputeApi({
      serverSettings: serviceManager.serverSettings
    });
    const model = new ComputeModel({
      api,
      events: serviceManager.events.stream,
      // Empty until the settings are read: then the server's default workspace is used.
      workspace: ''
    });

    const controller = new ComputeController({
      model,
      openDetails: name => details.open(name),
      openTab: (url, label) => openPageTab(shell, url, label)
    });
    const details = new DetailsTabs({ shell, model, controller });

    const panel = new ComputePanel({ model, controller });
    shell.add(panel, 'left', { rank: 600, type: 'Compute' });
    restorer?.add(panel, 'jupyter-compute-panel');
    registerCommands(app, panel, controller, palette);

    // The server went away: the model reconnects and fetches everything again.
    serviceManager.connectionFailure.connect((_, error) =>
      model.connectionLost(error)
    );

    const start = async () => {
      if (settingRegistry) {
        // The targets are what the panel is for: settings slow to load do not hold them back.
        const followed = followSettings(
          settingRegistry,
          PLUGIN_ID,
          settings => {
            controller.settings = settings;
          }
        );
        await Promise.race([
          followed,
          new Promise(resolve => setTimeout(resolve, SETTINGS_WAIT_MS))
        ]);
      }
      const { defaultWorkspace, collapsedGroups } = controller.settings;
      for (const family of collapsedGroups) {
        model.setCollapsed(family, true);
      }
      await model.refresh(defaultWorkspace || undefined);
      model.watchServer();
    };
    // The targets are asked for now, while JupyterLab restores its layout: the first refresh
    // uses the answers when the settings keep the server's default workspace.
    model.prefetch();
    void app.restored.then(start);

    return { model, controller };
  }
};

/** How long the panel waits for its settings before it loads the targets with the defaults. */
const SETTINGS_WAIT_MS = 3000;

const picker: JupyterFrontEndPlugin<void> = {
  id: 'jupyter-compute:notebook-picker',
  description:
    "A notebook toolbar item choosing the target the notebook's cells run on.",
  autoStart: true,
  requires: [IComputeService],
  activate: (app: JupyterFrontEnd, service: IComputeService): void => {
    app.docRegistry.addWidgetExtension(
      'Notebook',
      new TargetPickerExtension(
        service.model,
        service.controller,
        app.serviceManager.kernelspecs
      )
    );
  }
};

const kernels: JupyterFrontEndPlugin<void> = {
  id: 'jupyter-compute:kernels',
  description:
    "Kernels on targets: JupyterLab's kernel lists follow the targets, and the Launcher has a Compute section.",
  autoStart: true,
  optional: [ILauncher],
  activate: (app: JupyterFrontEnd, launcher: ILauncher | null): void => {
    const { kernelspecs, events, serverSettings } = app.serviceManager;
    const api = new ComputeApi({ serverSettings });
    new KernelSpecsFollower({
      events: events.stream,
      refresh: () => kernelspecs.refreshSpecs(),
      // At 10,000 targets a read of the kernelspecs is megabytes and seconds of the server's
      // time: read again only when the last change may have come after JupyterLab's first read.
      catchUpIf: app.restored.then(async () => {
        try {
          const news = await api.getKernelspecNews();
          return mayHaveMissedNews(
            news.seconds_since_change,
            performance.now()
          );
        } catch {
          return true;
        }
      })
    });
    new KernelEndedNotifier({
      events: events.stream,
      isOurs: id =>
        Array.from(app.serviceManager.kernels.running()).some(k => k.id === id),
      notify: message => Notification.warning(message, { autoClose: false })
    });
    if (launcher) {
      addNewNotebookCommand(app.commands, kernelspecs, computeIcon);
      new ComputeLauncherItems({ launcher, specs: kernelspecs });
    }
  }
};

export default [sidebar, picker, kernels];
