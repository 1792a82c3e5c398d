"""Every human-readable string of the reports, in Chinese (default) and English, in one place.

CSV headers stay the stable English column keys (contract.md: scripts rely on them); XLSX and
HTML show these labels. Missing keys fall back to the key itself, so a new column never crashes
a report — it just shows its key until translated.
"""

from __future__ import annotations

LANGS = ("zh", "en")

_STRINGS: dict[str, tuple[str, str]] = {
    # report titles
    "title.availability": ("视频通道在线率统计", "Channel availability"),
    "title.deductions": ("月度运维扣款汇总表", "Monthly maintenance deduction sheet"),
    "title.deduction-lines": ("扣款明细（按通道）", "Deductions by channel"),
    "title.link-fees": ("光纤链路费用核算", "Fibre link fees"),
    "title.uplinks": ("级联上级平台链路在线率", "Cascade links to upper platforms"),
    "uplink": ("上级平台编码", "Upper platform ID"),
    "title.daily-faults": ("每日故障通报", "Daily fault notice"),
    "title.reconciliation": ("周对账清单", "Weekly reconciliation list"),
    "title.annual-offline": ("年度离线摄像机扣款", "Annual offline-camera deduction"),
    # meta
    "meta.period": ("统计周期", "Period"),
    "meta.group_by": ("统计维度", "Grouped by"),
    "meta.policy_version": ("扣款政策版本", "Deduction policy version"),
    "meta.policy_body": ("扣款政策内容", "Deduction policy"),
    "meta.generated_at": ("生成时间", "Generated at"),
    "meta.intact_rate": ("完好率", "Intact rate"),
    "meta.timezone": ("时区", "Time zone"),
    "meta.window": ("对账区间", "Window"),
    "meta.station": ("派出所", "Police station"),
    "meta.notice_window": ("通报区间", "Covers"),
    "total": ("合计", "Total"),
    "chart": ("图表", "Chart"),
    # signatures on the monthly deduction sheet
    "sign_station": ("派出所（签字）：", "Police station (signature):"),
    "sign_vendor": ("运维单位（签字/盖章）：", "Vendor (signature/seal):"),
    "sign_ops": ("科技信息化部门（签字）：", "Police IT department (signature):"),
    "sign_head": ("科技信息化部门负责人（签字、盖章）：", "Head of the police IT department (signature, seal):"),
    "sign_date": ("日期：", "Date:"),
    "meta.send_to": ("报送", "Send to"),
    "title.repairs": ("每日修复及扣款公示", "Repairs and deductions of the day"),
    "title.reconciliation-amounts": ("周对账金额（厂商×派出所）", "Weekly amounts by vendor and station"),
    "title.deductions-by-station": ("月度运维扣款表（厂商×派出所）", "Monthly deductions by vendor and station"),
    "fault_hm": ("故障时长(时:分)", "Fault h:mm"),
    # columns
    "channel_id": ("通道编码", "Channel ID"),
    "name": ("名称", "Name"),
    "site": ("场所", "Site"),
    "owner": ("产权单位", "Owner"),
    "link": ("链路", "Link"),
    "vendor": ("厂商", "Vendor"),
    "held_hours": ("争议暂缓(小时)", "Held (disputed) h"),
    "tickets": ("工单", "Tickets"),
    "station": ("派出所", "Police station"),
    "batch": ("租赁批次", "Rental batch"),
    "group": ("编号", "ID"),
    "channels": ("通道数", "Channels"),
    "failed_channels": ("故障路数", "Failed channels"),
    "expected_s": ("应在线时长(秒)", "Expected (s)"),
    "online_s": ("在线(秒)", "Online (s)"),
    "offline_s": ("离线(秒)", "Offline (s)"),
    "no_video_s": ("无视频(秒)", "No video (s)"),
    "picture_fault_s": ("图像故障(秒)", "Picture fault (s)"),
    "maintenance_s": ("维护(秒)", "Maintenance (s)"),
    "unknown_s": ("未知(秒)", "Unknown (s)"),
    "availability": ("在线率", "Availability"),
    "intact_rate": ("完好率", "Intact rate"),
    "fault_episodes": ("故障次数", "Faults"),
    "fault_hours": ("故障时长(小时)", "Fault hours"),
    "billable_hours": ("计费时长(小时)", "Billable hours"),
    "beyond_deadline_hours": ("超期时长(小时)", "Hours beyond deadline"),
    "failed": ("故障路", "Failed channel"),
    "rent": ("租金(元)", "Rent (CNY)"),
    "deduction": ("扣款(元)", "Deduction (CNY)"),
    "payable": ("应付(元)", "Payable (CNY)"),
    "policy_version": ("政策版本", "Policy version"),
    "provider": ("运营商", "Provider"),
    "monthly_fee": ("月租(元)", "Monthly fee (CNY)"),
    "fee": ("本期费用(元)", "Fee for period (CNY)"),
    "fault": ("故障类型", "Fault"),
    "cause": ("原因", "Cause"),
    "since": ("故障开始", "Since"),
    "duration_s": ("持续(秒)", "Duration (s)"),
    "ticket": ("工单号", "Ticket"),
    "feedback": ("厂商反馈", "Vendor feedback"),
    "expected_repair": ("预计修复", "Expected repair"),
    "status": ("状态", "Status"),
    "recovered": ("恢复时间(平台)", "Recovered (ledger)"),
    "vendor_repaired": ("修复时间(厂商)", "Repaired (vendor)"),
    "difference_s": ("时间差(秒)", "Difference (s)"),
    "check": ("核对", "Check"),
    "offline_days": ("离线天数", "Offline days"),
    "threshold_days": ("阈值(天)", "Threshold (days)"),
    # values
    "value.online": ("在线", "online"),
    "value.offline": ("离线", "offline"),
    "value.no_video": ("无视频", "no video"),
    "value.picture_fault": ("图像故障", "picture fault"),
    "value.maintenance": ("维护", "maintenance"),
    "value.unknown": ("未知", "unknown"),
    "value.open": ("待处理", "open"),
    "value.vendor_answered": ("厂商已反馈", "vendor answered"),
    "value.repaired": ("已修复待确认", "repaired"),
    "value.confirmed": ("已确认", "confirmed"),
    "value.disputed": ("有异议", "disputed"),
    "value.ongoing": ("未恢复", "ongoing"),
    "value.recovered": ("已恢复", "recovered"),
    "value.ok": ("一致", "ok"),
    "value.mismatch": ("不一致", "mismatch"),
    "value.unanswered": ("未反馈", "unanswered"),
    "value.no_ticket": ("无工单", "no ticket"),
    # causes (issue 11: causes in Chinese on every sheet)
    "cause.keepalive_lost": ("心跳丢失", "keepalive lost"),
    "cause.registration_expired": ("注册过期", "registration expired"),
    "cause.unregistered": ("设备注销", "unregistered"),
    "cause.connection_closed": ("连接断开", "connection closed"),
    "cause.revoked": ("准入撤销", "admission revoked"),
    "cause.gateway_stopped": ("网关停止", "gateway stopped"),
    "cause.gateway_down": ("网关故障", "gateway down"),
    "cause.never_registered": ("从未注册", "never registered"),
    "cause.silent_after_restart": ("网关重启后未上线", "silent after gateway restart"),
    "cause.removed_from_catalog": ("目录中已删除", "removed from catalog"),
    "cause.catalog_off": ("目录状态离线", "off in catalog"),
    "cause.platform_offline": ("下级平台离线", "lower platform offline"),
    "cause.play_timeout": ("点播无视频", "no video on play"),
    "cause.no_stream": ("无码流", "no stream"),
    "cause.no_video": ("无视频", "no video"),
    "cause.blur": ("图像模糊", "blurred picture"),
    "cause.black": ("黑屏", "black picture"),
    "cause.frozen": ("画面冻结", "frozen picture"),
    "cause.occluded": ("遮挡", "occluded"),
    "cause.maintenance_window": ("维护窗口", "maintenance window"),
    "cause.held_disputed": ("争议暂缓", "held: disputed"),
    "cause.link_down": ("链路中断", "link down"),
    "group.channel": ("通道", "channel"),
    "group.site": ("场所", "site"),
    "group.link": ("链路", "link"),
    "group.vendor": ("厂商", "vendor"),
    "group.batch": ("批次", "batch"),
    "group.station": ("派出所", "station"),
}

#: Columns whose cell values are enum words to translate.
TRANSLATED_VALUES = frozenset({"fault", "status", "check"})


def t(key: str, lang: str = "zh") -> str:
    """The label for `key` in `lang` ("zh" or "en"); the key itself when unknown."""
    pair = _STRINGS.get(key)
    if pair is None:
        return key
    return pair[1] if lang == "en" else pair[0]


def value(column: str, raw: object, lang: str = "zh") -> object:
    """Translate enum-like cell values (fault type, ticket status, check result, cause)."""
    if column in TRANSLATED_VALUES and isinstance(raw, str) and f"value.{raw}" in _STRINGS:
        return t(f"value.{raw}", lang)
    if column == "cause" and isinstance(raw, str) and f"cause.{raw}" in _STRINGS:
        return t(f"cause.{raw}", lang)
    return raw
